"""The one exception hierarchy of topicguard.

    TopicGuardError              base: the CLI catches it, prints one line and exits non-zero
    ├── SpecError                a domain spec (guard.yaml) that is missing or invalid
    ├── DataError                a dataset that cannot be read or used (format, columns, labels)
    ├── ModelError               a model folder or base model that cannot be loaded or written
    ├── LLMError                 an LLM endpoint that cannot be used (no key, unreachable, refused)
    │   └── LLMRequestError      it refused one request (a text too long, say); others may pass
    └── MissingDependencyError   an optional extra is not installed (also an ImportError)

Every message says what is wrong and how to fix it. Foreign errors are translated with
``raise XError(...) from exc`` so the cause stays available to Python users.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "LLMError",
    "LLMRequestError",
    "MissingDependencyError",
    "ModelError",
    "SpecError",
    "TopicGuardError",
]


class TopicGuardError(Exception):
    """Base class of every error topicguard raises on purpose."""


class SpecError(TopicGuardError):
    """The domain spec is missing, unreadable or invalid."""


class DataError(TopicGuardError):
    """A dataset cannot be read, or its columns or labels cannot be used."""


class ModelError(TopicGuardError):
    """A model folder or base model cannot be loaded, or an output folder cannot be written."""


class LLMError(TopicGuardError):
    """An LLM endpoint cannot be used: no key, unreachable, or it keeps failing."""


class LLMRequestError(LLMError):
    """The endpoint answered, but refused this one request (400, 413, 422: a text too long
    for the model's context, say); other requests to it may pass."""


class MissingDependencyError(TopicGuardError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this needs the optional package {package!r}: "
            f"install it with `pip install 'topicguard[{extra}]'`"
        )
