"""``data check``: what a dataset holds and what is wrong with it.

Counts by label, category and language; exact duplicates after normalisation; near-duplicate
pairs; the same text with conflicting labels; length statistics. A dataset is clean when it
has no duplicates of either kind and no conflicts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from topicguard.data import Example
from topicguard.leakage import DEFAULT_THRESHOLD, exact_duplicate_groups, near_duplicates

__all__ = ["DataReport", "check_examples"]

_EXAMPLES_SHOWN = 10


@dataclass
class DataReport:
    """The findings of :func:`check_examples`; ``to_dict`` is the ``--json`` output."""

    n: int
    labels: dict[str, int]
    categories: dict[str, dict[str, int]]
    languages: dict[str, int]
    exact_duplicates: list[list[dict[str, Any]]]
    near_duplicates: list[dict[str, Any]]
    conflicts: list[list[dict[str, Any]]]
    lengths: dict[str, float]
    threshold: float

    @property
    def clean(self) -> bool:
        return not (self.exact_duplicates or self.near_duplicates or self.conflicts)

    def to_dict(self, *, examples_shown: int = _EXAMPLES_SHOWN) -> dict[str, Any]:
        return {
            "n": self.n,
            "labels": self.labels,
            "categories": self.categories,
            "languages": self.languages,
            "lengths": self.lengths,
            "near_duplicate_threshold": self.threshold,
            "exact_duplicate_groups": len(self.exact_duplicates),
            "near_duplicate_pairs": len(self.near_duplicates),
            "conflicting_label_groups": len(self.conflicts),
            "examples": {
                "exact_duplicates": self.exact_duplicates[:examples_shown],
                "near_duplicates": self.near_duplicates[:examples_shown],
                "conflicts": self.conflicts[:examples_shown],
            },
            "clean": self.clean,
        }


def check_examples(
    examples: Sequence[Example], *, threshold: float = DEFAULT_THRESHOLD
) -> DataReport:
    """Inspect ``examples``; rows are referred to by their 1-based position."""
    import numpy as np

    texts = [e.text for e in examples]

    def row(i: int) -> dict[str, Any]:
        return {"row": i + 1, "text": examples[i].text, "label": examples[i].label}

    groups = exact_duplicate_groups(texts)
    conflicts = [[row(i) for i in g] for g in groups if len({examples[i].label for i in g}) > 1]
    pairs = [
        {"similarity": p.similarity, "first": row(p.first), "second": row(p.second)}
        for p in near_duplicates(texts, threshold=threshold)
    ]
    categories: dict[str, dict[str, int]] = {}
    for example in examples:
        counts = categories.setdefault(
            example.category or "(none)", {"on_topic": 0, "off_topic": 0}
        )
        counts["on_topic" if example.label else "off_topic"] += 1
    chars = np.array([len(t) for t in texts], dtype=float)
    words = np.array([len(t.split()) for t in texts], dtype=float)
    lengths = {
        "chars_min": float(chars.min()),
        "chars_median": float(np.median(chars)),
        "chars_p95": float(np.percentile(chars, 95)),
        "chars_max": float(chars.max()),
        "words_median": float(np.median(words)),
        "share_up_to_3_words": round(float((words <= 3).mean()), 4),
        "share_over_30_words": round(float((words > 30).mean()), 4),
    }
    return DataReport(
        n=len(examples),
        labels={
            "on_topic": sum(e.label for e in examples),
            "off_topic": sum(not e.label for e in examples),
        },
        categories=dict(sorted(categories.items())),
        languages=dict(sorted(Counter(e.lang or "(none)" for e in examples).items())),
        exact_duplicates=[[row(i) for i in g] for g in groups],
        near_duplicates=pairs,
        conflicts=conflicts,
        lengths=lengths,
        threshold=threshold,
    )
