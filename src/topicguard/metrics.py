"""Metrics of a binary guard, as flat ``dict[str, float]``, and the choice of a threshold.

On-topic (allowed) is the positive class. The two rates a guard's user lives with:
``false_block_rate`` = share of on-topic queries blocked (the over-cautious bot), and
``leak_rate`` = share of off-topic or hostile queries let through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "HEADLINE_METRICS",
    "accuracy_threshold",
    "calibration_error",
    "compute_metrics",
    "reliability_bins",
    "sigmoid",
]

# The metrics a person reads first, in the order tables show them.
HEADLINE_METRICS = (
    "accuracy",
    "f1",
    "f1_weighted",
    "precision",
    "recall",
    "false_block_rate",
    "leak_rate",
    "roc_auc",
    "calibration_error",
)


def compute_metrics(
    labels: Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float | np.ndarray,
) -> dict[str, float]:
    """Metrics at ``threshold`` (a score at or above it is allowed; one per row or shared)."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    predicted = s >= threshold
    n_on, n_off = int(y.sum()), int((~y).sum())
    both_classes = n_on > 0 and n_off > 0
    metrics = {
        "n": float(len(y)),
        "accuracy": float((predicted == y).mean()) if len(y) else float("nan"),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "f1_weighted": float(f1_score(y, predicted, average="weighted", zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "false_block_rate": float((~predicted & y).sum() / n_on) if n_on else float("nan"),
        "leak_rate": float((predicted & ~y).sum() / n_off) if n_off else float("nan"),
        "roc_auc": float(roc_auc_score(y, s)) if both_classes else float("nan"),
        "calibration_error": calibration_error(y, s),
        "threshold": float(threshold) if np.ndim(threshold) == 0 else float("nan"),
    }
    return metrics


def accuracy_threshold(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float:
    """The cut-off nearest to 0.5 whose accuracy on ``labels`` is within one standard error
    (rounded up to whole rows) of the best one.

    A validation set of a few hundred rows is small: moving the threshold from 0.5 to 0.99
    to win one more row there tends to block many real customers later. So the threshold
    moves away from 0.5 only when the gain is larger than the noise in measuring it. The
    standard error uses add-one smoothing so that a perfect score is not treated as exact.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n = len(y)
    if n == 0 or y.all() or (~y).all():
        return 0.5
    cuts = np.unique(np.concatenate([s, [0.0, 1.0 + 1e-9]]))
    candidates = np.concatenate([[0.5], (cuts[:-1] + cuts[1:]) / 2])
    correct = np.array([int(((s >= t) == y).sum()) for t in candidates])
    best = int(correct.max())
    p = (best + 1) / (n + 2)
    tolerance_rows = math.ceil(math.sqrt(p * (1 - p) * n) - 1e-9)
    eligible = candidates[correct >= best - tolerance_rows]
    return float(eligible[np.argmin(np.abs(eligible - 0.5))])


def reliability_bins(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """Per non-empty equal-width score bin: (mean score, observed on-topic share, rows)."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    index = np.minimum((s * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append((float(s[mask].mean()), float(y[mask].mean()), int(mask.sum())))
    return out


def calibration_error(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, bins: int = 10
) -> float:
    """Expected calibration error: the mean gap between the predicted and the observed
    on-topic share over equal-width score bins, weighted by their size (0 is perfect)."""
    if len(labels) == 0:
        return float("nan")
    gaps = sum(n * abs(share - mean) for mean, share, n in reliability_bins(labels, scores, bins))
    return float(gaps / len(labels))


def sigmoid(x: Any) -> Any:
    """Logistic function, stable for large ``|x|``."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))
