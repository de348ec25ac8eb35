"""Choosing the operating point: calibrated scores and a threshold for a stated objective.

A guard's ``score`` is the probability that a text is on topic. The fine-tuned encoder's raw
softmax is over-confident (its mistakes sit at 0.001 and 0.999), so the margin between the
two logits is divided by a temperature fitted on validation data (temperature scaling: one
parameter, keeps the ranking, stable on a few hundred rows). The threshold is then chosen on
the calibrated scores for one of four objectives:

- ``accuracy`` (default): the cut-off nearest 0.5 whose accuracy is within one standard error
  of the best one (see :func:`topicguard.metrics.accuracy_threshold`);
- ``max_f1``: the best F1 (on topic is positive), ties nearest 0.5;
- ``cost``: the fewest ``cost_ratio * false blocks + leaks``: a false block costs
  ``cost_ratio`` leaks;
- ``target_false_block``: the fewest leaks with at most ``target`` of on-topic queries
  blocked. The threshold is the ``(k+1)``-th lowest on-topic validation score with
  ``(k+1)/(n+1) <= target`` (split-conformal), so a new on-topic query from the same
  distribution is blocked with probability at most ``target``.

``topicguard train`` calibrates on its validation split and keeps those scores, so
``topicguard calibrate MODEL --max-f1`` moves the operating point later without retraining;
``topicguard calibrate MODEL DATA`` recalibrates on any labelled data. Both rewrite
``topicguard.json`` (for a routed guard, each model's own, on the rows routed to it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from topicguard._exceptions import DataError
from topicguard.folder import GuardMetadata
from topicguard.metrics import accuracy_threshold, calibration_error, compute_metrics, sigmoid

if TYPE_CHECKING:
    from topicguard.data import Example

__all__ = [
    "Calibration",
    "Objective",
    "calibrate",
    "choose_threshold",
    "fit_calibration",
    "fit_temperature",
    "sigmoid",
]

logger = logging.getLogger(__name__)

ObjectiveKind = Literal["accuracy", "max_f1", "cost", "target_false_block"]
# Temperatures outside this range mean the validation data cannot tell (say, perfectly
# separated rows pull the temperature towards zero); the bound keeps the scores sane.
TEMPERATURE_RANGE = (0.5, 50.0)


@dataclass(frozen=True)
class Objective:
    """What the threshold optimises. ``value`` is the cost ratio or the target rate."""

    kind: ObjectiveKind = "accuracy"
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "target_false_block":
            if self.value is None or not 0 < self.value < 1:
                raise DataError(
                    f"the target false-block rate must be in (0, 1), got {self.value}: "
                    "for 1% pass --target-false-block 0.01"
                )
        elif self.kind == "cost":
            if self.value is None or not self.value > 0 or math.isinf(self.value):
                raise DataError(
                    f"the cost ratio must be a positive number, got {self.value}: "
                    "--cost-ratio 5 means one false block costs as much as five leaks"
                )
        elif self.kind not in ("accuracy", "max_f1"):
            raise DataError(f"unknown threshold objective {self.kind!r}")

    @classmethod
    def from_options(
        cls,
        *,
        target_false_block: float | None = None,
        max_f1: bool = False,
        cost_ratio: float | None = None,
    ) -> Objective:
        """The objective named by at most one of the CLI options (none: ``accuracy``)."""
        chosen = [
            name
            for name, given in (
                ("--target-false-block", target_false_block is not None),
                ("--max-f1", max_f1),
                ("--cost-ratio", cost_ratio is not None),
            )
            if given
        ]
        if len(chosen) > 1:
            raise DataError(f"choose one threshold objective, not {' and '.join(chosen)}")
        if target_false_block is not None:
            return cls("target_false_block", target_false_block)
        if cost_ratio is not None:
            return cls("cost", cost_ratio)
        return cls("max_f1") if max_f1 else cls()

    def describe(self) -> str:
        if self.kind == "target_false_block":
            return f"at most {self.value:.2%} false blocks, fewest leaks"
        if self.kind == "cost":
            return f"fewest errors when a false block costs {self.value:g} leaks"
        if self.kind == "max_f1":
            return "best F1"
        return "best accuracy (within one standard error, nearest 0.5)"


def fit_temperature(
    margins: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray
) -> float:
    """The temperature ``T`` minimising the log loss of ``sigmoid(margin / T)``."""
    from scipy.optimize import minimize_scalar

    m = np.asarray(margins, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    _require_both_classes(y, "calibration")
    signed = np.where(y, m, -m)

    def loss(log_t: float) -> float:
        return float(np.logaddexp(0.0, -signed / math.exp(log_t)).mean())

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    result = minimize_scalar(loss, bounds=(low, high), method="bounded")
    return float(math.exp(result.x))


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if len(y) == 0 or y.all() or (~y).all():
        raise DataError(
            f"{what} needs on-topic and off-topic rows: "
            f"got {int(y.sum())} on-topic and {int((~y).sum())} off-topic"
        )


def choose_threshold(
    labels: Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    objective: Objective | None = None,
) -> float:
    """The threshold (a score at or above it is allowed) for ``objective`` on these rows."""
    objective = objective or Objective()
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    _require_both_classes(y, "choosing a threshold")
    if objective.kind == "accuracy":
        return accuracy_threshold(y, s)
    if objective.kind == "target_false_block":
        assert objective.value is not None
        on_topic = np.sort(s[y])
        k = math.floor(objective.value * (len(on_topic) + 1)) - 1
        if k < 0:
            logger.warning(
                "%d on-topic validation rows cannot vouch for a false-block rate of %.2f%% "
                "(the least is %.2f%%): the threshold blocks none of them; calibrate on more "
                "on-topic rows for a guarantee",
                len(on_topic),
                100 * objective.value,
                100 / (len(on_topic) + 1),
            )
            k = 0
        return float(on_topic[k])
    # max_f1 and cost: scan every cut between distinct scores
    cuts = np.unique(np.concatenate([s, [0.0, 1.0 + 1e-9]]))
    candidates = np.concatenate([[0.5], (cuts[:-1] + cuts[1:]) / 2])
    allowed = s[None, :] >= candidates[:, None]
    true_pos = (allowed & y).sum(axis=1)
    false_blocks = (~allowed & y).sum(axis=1)
    leaks = (allowed & ~y).sum(axis=1)
    if objective.kind == "max_f1":
        gain = 2 * true_pos / np.maximum(2 * true_pos + false_blocks + leaks, 1)
    else:
        assert objective.value is not None
        gain = -(objective.value * false_blocks + leaks)
    best = candidates[np.isclose(gain, gain.max(), rtol=0, atol=1e-12)]
    return float(best[np.argmin(np.abs(best - 0.5))])


@dataclass
class Calibration:
    """A fitted operating point: what ``topicguard.json`` stores under ``calibration``."""

    temperature: float
    threshold: float
    objective: str
    objective_value: float | None
    n: int
    n_on_topic: int
    ece_before: float
    ece_after: float
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_calibration(
    labels: Sequence[bool] | np.ndarray,
    margins: Sequence[float] | np.ndarray,
    objective: Objective | None = None,
) -> Calibration:
    """Fit the temperature on ``margins`` (allowed minus blocked logit), then the threshold."""
    objective = objective or Objective()
    y = np.asarray(labels, dtype=bool)
    m = np.asarray(margins, dtype=np.float64)
    temperature = fit_temperature(m, y)
    raw, calibrated = sigmoid(m), sigmoid(m / temperature)
    threshold = choose_threshold(y, calibrated, objective)
    return Calibration(
        temperature=temperature,
        threshold=threshold,
        objective=objective.kind,
        objective_value=objective.value,
        n=len(y),
        n_on_topic=int(y.sum()),
        ece_before=calibration_error(y, raw),
        ece_after=calibration_error(y, calibrated),
        metrics=compute_metrics(y, calibrated, threshold),
    )


def calibrate(
    model_dir: str | Path,
    examples: Sequence[Example] | None = None,
    objective: Objective | None = None,
    *,
    backend: str = "auto",
) -> list[Calibration]:
    """Recalibrate a trained guard and rewrite its metadata; one result per model (a routed
    guard has two). With ``examples``, each model is fitted on the rows routed to it; without,
    on the validation scores stored at training time."""
    from topicguard.runtime import TopicGuard

    model_dir = Path(model_dir)
    guard = TopicGuard.load(model_dir, backend=backend, warm_up=False)
    jobs: list[tuple[Any, list[Example] | None]] = [(guard, None)]
    if examples is None:
        if guard.multilingual is not None:
            jobs.append((guard.multilingual, None))
    else:
        rows = list(examples)
        _, routed = guard.routes([e.text for e in rows])
        jobs = [(guard, [e for e, r in zip(rows, routed, strict=True) if not r])]
        if guard.multilingual is not None:
            jobs.append((guard.multilingual, [e for e, r in zip(rows, routed, strict=True) if r]))
    fitted: list[tuple[Path, GuardMetadata, Calibration]] = []
    for model, subset in jobs:
        metadata = GuardMetadata.read(model.path)
        if subset is None:
            stored = metadata.calibration.get("validation")
            if not stored:
                raise DataError(
                    f"{model.path} keeps no validation scores (trained by an older version): "
                    f"pass labelled data, `topicguard calibrate {model_dir} DATA`"
                )
            labels = np.array(stored["labels"], dtype=bool)
            margins = np.array(stored["margins"], dtype=np.float64)
            source = "validation split"
        else:
            if len(jobs) > 1 and not _both_classes(subset):
                logger.warning(
                    "%s: the data routed to it has %d rows, not both classes: left as it was",
                    model.path,
                    len(subset),
                )
                continue
            labels = np.array([e.label for e in subset], dtype=bool)
            margins = model.margins([e.text for e in subset])
            source = "topicguard calibrate"
        calibration = fit_calibration(labels, margins, objective)
        stored_point = calibration.to_dict() | {"data": source}
        if "validation" in metadata.calibration:
            stored_point["validation"] = metadata.calibration["validation"]
        metadata = metadata.with_calibration(stored_point, objective=calibration.objective)
        fitted.append((model.path, metadata, calibration))
    # written only once every model has been fitted: a failure leaves the guard as it was
    for path, metadata, _ in fitted:
        metadata.write(path)
    return [calibration for _, _, calibration in fitted]


def _both_classes(rows: Sequence[Example]) -> bool:
    labels = {e.label for e in rows}
    return labels == {True, False}
