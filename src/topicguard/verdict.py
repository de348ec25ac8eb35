"""``Verdict``: the guard's decision on one text, as every caller receives it (the runtime
makes it, conversations, the decision log, the servers and the CLI read it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Verdict"]


@dataclass(frozen=True)
class Verdict:
    """The guard's decision on one text. ``score`` is the probability that it is on topic;
    ``lang`` the detected language (``und``: no letters) and ``lang_supported`` whether the
    guard's spec lists it (both None for a guard that knows no languages). ``threshold`` is
    the one ``score`` was held to; ``context`` is True when a conversation's earlier turn let
    a short follow-up through (``score`` is then the score of both turns read together; see
    :meth:`TopicGuard.classify_conversation`)."""

    text: str
    label: str
    score: float
    allowed: bool
    lang: str | None = None
    lang_supported: bool | None = None
    threshold: float | None = None
    context: bool = False

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "text": self.text,
            "label": self.label,
            "score": self.score,
            "allowed": self.allowed,
        }
        if self.lang is not None:
            row["lang"] = self.lang
            row["lang_supported"] = self.lang_supported
        if self.context:
            row["context"] = True
        return row
