"""Optional engines. :mod:`topicguard.integrations.ray`: Ray Serve and Ray Data
(``pip install 'topicguard[ray]'``)."""
