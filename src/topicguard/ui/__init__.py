"""The web page a guard serves at ``/``: try the guard, read its card, review what it blocked.

Mounted by ``topicguard serve`` and ``topicguard proxy`` (``--no-ui`` leaves it out); see
:mod:`topicguard.ui.app` for the routes and :mod:`topicguard.ui.reviews` for review files.
"""

from __future__ import annotations

from topicguard.ui.app import RunGuard, UiConfig, mount_ui, worker_runner

__all__ = ["RunGuard", "UiConfig", "mount_ui", "worker_runner"]
