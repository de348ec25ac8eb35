"""topicguard: a small, fast topical guardrail for LLM chatbots.

    from topicguard import TopicGuard
    guard = TopicGuard.load("runs/spellbots-logistics")
    guard.classify(["Where is my parcel?"])[0].allowed   # True

Heavy libraries (torch, transformers) load only when a model does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topicguard._exceptions import (
    DataError,
    LLMError,
    LLMRequestError,
    MissingDependencyError,
    ModelError,
    SpecError,
    TopicGuardError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from topicguard.runtime import TopicGuard
    from topicguard.verdict import Verdict

__all__ = [
    "DataError",
    "LLMError",
    "LLMRequestError",
    "MissingDependencyError",
    "ModelError",
    "SpecError",
    "TopicGuard",
    "TopicGuardError",
    "Verdict",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in ("TopicGuard", "Verdict"):
        from topicguard import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'topicguard' has no attribute {name!r}")
