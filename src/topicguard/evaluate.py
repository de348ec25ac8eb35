"""Evaluating a guard on labelled data: flat metrics, per-group breakdowns, the errors."""

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

    from topicguard.runtime import TopicGuard

__all__ = ["Evaluation", "evaluate"]


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
