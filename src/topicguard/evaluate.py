"""Evaluating a guard on labelled data: flat metrics, per-group breakdowns, the errors.
Conversation files are measured per user turn, with and without the earlier turns' context."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from topicguard.data import Example
from topicguard.metrics import compute_metrics

if TYPE_CHECKING:
    import numpy as np

    from topicguard.conversations import Conversation
    from topicguard.runtime import TopicGuard

__all__ = ["ConversationEvaluation", "Evaluation", "evaluate", "evaluate_conversations"]


@dataclass
class Evaluation:
    """Scores of a guard on a dataset, at the guard's threshold (``thresholds``: per row,
    when texts routed to the multilingual model meet that model's own threshold)."""

    examples: list[Example]
    scores: np.ndarray
    threshold: float
    metrics: dict[str, float]
    thresholds: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.scores >= (self.threshold if self.thresholds is None else self.thresholds)

    def breakdown(self, column: str) -> dict[str, dict[str, float]]:
        """Counts and error rates per value of ``category``, ``lang`` or ``source``."""
        groups: dict[str, dict[str, float]] = defaultdict(
            lambda: {"n": 0, "on_topic": 0, "errors": 0, "false_blocks": 0, "leaks": 0}
        )
        for example, allowed in zip(self.examples, self.predicted, strict=True):
            value = getattr(example, column)
            if value is None:
                continue
            group = groups[value]
            group["n"] += 1
            group["on_topic"] += int(example.label)
            if bool(allowed) != example.label:
                group["errors"] += 1
                group["false_blocks" if example.label else "leaks"] += 1
        for group in groups.values():
            group["accuracy"] = 1 - group["errors"] / group["n"]
            off_topic = group["n"] - group["on_topic"]
            group["false_block_rate"] = (
                group["false_blocks"] / group["on_topic"] if group["on_topic"] else math.nan
            )
            group["leak_rate"] = group["leaks"] / off_topic if off_topic else math.nan
        return dict(sorted(groups.items()))

    def errors(self) -> list[dict[str, Any]]:
        """Misclassified rows, the most confident mistakes first."""
        import numpy as np

        rows: list[tuple[float, dict[str, Any]]] = []
        cuts = np.broadcast_to(
            self.threshold if self.thresholds is None else self.thresholds, self.scores.shape
        )
        for example, score, allowed, cut in zip(
            self.examples, self.scores, self.predicted, cuts, strict=True
        ):
            if bool(allowed) != example.label:
                row = {
                    "text": example.text,
                    "label": example.label,
                    "score": round(float(score), 6),
                    "error": "false_block" if example.label else "leak",
                    "category": example.category,
                    "lang": example.lang,
                    "source": example.source,
                }
                rows.append((abs(float(score) - float(cut)), row))
        rows.sort(key=lambda pair: pair[0], reverse=True)
        return [row for _, row in rows]

    def to_dict(self) -> dict[str, Any]:
        """The ``evaluate --json`` object: flat metrics, then per-category and per-language."""
        result: dict[str, Any] = {
            # NaN (say, ROC AUC on one-class data) is not JSON: report it as null
            k: int(v) if k == "n" else (None if math.isnan(v) else v)
            for k, v in self.metrics.items()
        }
        for column, key in (
            ("category", "categories"),
            ("lang", "languages"),
            ("source", "sources"),
        ):
            groups = self.breakdown(column)
            if groups:
                result[key] = {
                    name: {k: None if math.isnan(v) else v for k, v in group.items()}
                    for name, group in groups.items()
                }
        return result


def evaluate(guard: TopicGuard, examples: Sequence[Example]) -> Evaluation:
    """Score ``examples`` with ``guard`` and compute the metrics at its threshold."""
    import numpy as np

    rows = list(examples)
    judged = guard.judge([e.text for e in rows])
    labels = np.array([e.label for e in rows], dtype=bool)
    metrics = compute_metrics(labels, judged.scores, judged.thresholds)
    metrics["threshold"] = guard.threshold
    if guard.second_opinion_band is not None:
        metrics["second_opinion_share"] = float(np.mean(judged.second_opinion)) if rows else 0.0
    return Evaluation(
        examples=rows,
        scores=judged.scores,
        threshold=guard.threshold,
        metrics=metrics,
        thresholds=judged.thresholds,
    )


@dataclass
class ConversationEvaluation:
    """A guard on conversations, one row per user turn: ``with_context`` judges each turn as
    :meth:`TopicGuard.classify_conversation` does on the conversation up to it,
    ``without_context`` judges it alone. ``context_used``: turns let through by context."""

    conversations: int
    with_context: Evaluation
    without_context: Evaluation
    context_used: int

    def to_dict(self) -> dict[str, Any]:
        """The ``evaluate --json`` object of a conversation file."""
        return {
            "conversations": self.conversations,
            "turns": len(self.with_context.examples),
            "context_used": self.context_used,
            "with_context": self.with_context.to_dict(),
            "without_context": self.without_context.to_dict(),
        }


def evaluate_conversations(
    guard: TopicGuard, conversations: Sequence[Conversation]
) -> ConversationEvaluation:
    """Score every labelled user turn of ``conversations`` with and without context."""
    import numpy as np

    examples: list[Example] = []
    prefixes: list[list[dict[str, str]]] = []
    for conversation in conversations:
        for index in conversation.user_turns():
            turn = conversation.turns[index]
            examples.append(
                Example(
                    text=turn.content,
                    label=bool(turn.label),
                    category=turn.category,
                    lang=conversation.lang,
                )
            )
            prefixes.append(conversation.messages(index + 1))
    without = evaluate(guard, examples)
    verdicts = guard.classify_conversations(prefixes)
    scores = np.array([v.score for v in verdicts], dtype=float)
    thresholds = np.array(
        [guard.threshold if v.threshold is None else v.threshold for v in verdicts], dtype=float
    )
    labels = np.array([e.label for e in examples], dtype=bool)
    metrics = compute_metrics(labels, scores, thresholds)
    metrics["threshold"] = guard.threshold
    with_context = Evaluation(
        examples=examples,
        scores=scores,
        threshold=guard.threshold,
        metrics=metrics,
        thresholds=thresholds,
    )
    return ConversationEvaluation(
        conversations=len(conversations),
        with_context=with_context,
        without_context=without,
        context_used=sum(v.context for v in verdicts),
    )
