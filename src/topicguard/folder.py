"""The model folder's format, owned here and nowhere else.

A guard folder is a plain Hugging Face model folder (safetensors, ``config.json``,
tokenizer) plus the files below; every other module asks this one for their names and for
the metadata in ``topicguard.json``::

    MODEL/
      topicguard.json          GuardMetadata: threshold, calibration, labels, languages, routing,
                               training record, data fingerprint, metrics
      onnx/model.onnx          fp32 graph (``topicguard export``)
      onnx/model.int8.onnx     dynamic int8 graph (``topicguard export --int8``)
      bench.json               the last ``topicguard bench --save`` result
      multilingual/            a second guard folder of the same shape (routed languages)

``GuardMetadata.read`` validates with errors that say what to do, upgrades older format
versions in memory and refuses folders written by a newer topicguard; ``write`` replaces the
file atomically. Keys this version does not know are kept as they are (``details``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from topicguard._exceptions import ModelError
from topicguard._io import atomic_write_text

__all__ = [
    "BENCH_FILE",
    "FORMAT_VERSION",
    "GuardMetadata",
    "METADATA_FILE",
    "MULTILINGUAL_DIR",
    "Routing",
    "multilingual_path",
    "onnx_file",
    "read_bench",
    "write_bench",
]

logger = logging.getLogger(__name__)

METADATA_FILE = "topicguard.json"
MULTILINGUAL_DIR = "multilingual"
BENCH_FILE = "bench.json"
ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ONNX_FILES = {"onnx": f"{ONNX_DIR}/{FP32_FILE}", "onnx-int8": f"{ONNX_DIR}/{INT8_FILE}"}

# 1: the first versioned format. Folders without ``format_version`` (0) predate it: they may
# lack labels, max_length and calibration, whose values were then always the ones below.
FORMAT_VERSION = 1
DEFAULT_LABELS = {"allowed": "True", "blocked": "False"}
DEFAULT_MAX_LENGTH = 128  # what every guard before format 1 was trained and served with

# Keys with a typed field; everything else is kept, unread, in ``details``.
_TYPED = (
    "format_version",
    "threshold",
    "threshold_objective",
    "calibration",
    "labels",
    "max_length",
    "base_model",
    "languages",
    "routing",
)


def onnx_file(model_dir: Path, backend: str) -> Path:
    """Where ``backend`` (``onnx`` or ``onnx-int8``) keeps its graph in ``model_dir``."""
    return model_dir / ONNX_FILES[backend]


def multilingual_path(model_dir: Path) -> Path | None:
    """The multilingual model folder inside a guard folder, if it has one."""
    second = model_dir / MULTILINGUAL_DIR
    return second if (second / METADATA_FILE).is_file() else None


def write_bench(model_dir: Path, result: dict[str, Any]) -> None:
    """Keep a ``topicguard bench`` result in the folder for ``evaluate --report``; a folder
    that cannot be written (read-only) only loses the copy, with a warning."""
    path = model_dir / BENCH_FILE
    try:
        atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        logger.warning("could not save %s: %s", path, exc)


def read_bench(model_dir: Path) -> dict[str, Any] | None:
    """The latency figures ``bench`` left in the folder, if any (and readable)."""
    path = model_dir / BENCH_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("ignoring %s: %s", path, exc)
        return None
    return result if isinstance(result, dict) and "backends" in result else None


@dataclass(frozen=True)
class Routing:
    """Which languages the folder's own model serves, where the multilingual model lives,
    and the band of unsure fast-model scores that also get its opinion (None: never)."""

    fast_languages: tuple[str, ...] = ()
    multilingual: str | None = None
    second_opinion: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "fast_languages": list(self.fast_languages),
            "multilingual": self.multilingual,
        }
        if self.second_opinion is not None:
            row["second_opinion"] = list(self.second_opinion)
        return row


@dataclass(frozen=True)
class GuardMetadata:
    """What ``topicguard.json`` holds. ``threshold`` is on the calibrated score (probability
    on topic); ``calibration`` is the fitted operating point (temperature, objective,
    validation margins); ``details`` keeps the training record and any key this version
    does not read, so that a read-then-write never loses anything."""

    threshold: float
    labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    max_length: int = DEFAULT_MAX_LENGTH
    calibration: dict[str, Any] = field(default_factory=dict)
    threshold_objective: str | None = None
    base_model: str | None = None
    languages: tuple[str, ...] = ()
    routing: Routing | None = None
    format_version: int = FORMAT_VERSION
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        """The calibration temperature the logit margin is divided by (1: uncalibrated)."""
        return float(self.calibration.get("temperature", 1.0))

    @property
    def spec(self) -> dict[str, Any] | None:
        """The spec the guard was trained for, as recorded (None when it has none)."""
        spec = self.details.get("spec")
        return spec if isinstance(spec, dict) else None

    @property
    def allowed_label(self) -> str:
        return self.labels["allowed"]

    @property
    def blocked_label(self) -> str:
        return self.labels["blocked"]

    @classmethod
    def read(cls, model_dir: str | Path) -> GuardMetadata:
        """The metadata of a model folder, validated; errors say what to do."""
        path = Path(model_dir)
        if not path.exists():
            raise ModelError(f"model folder not found: {path}")
        if not path.is_dir():
            raise ModelError(f"{path} is not a folder: pass the folder `topicguard train` wrote")
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise ModelError(
                f"{path} is not a topicguard model (no {METADATA_FILE}): "
                "train one with `topicguard train --out DIR`"
            )
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path} is unreadable ({exc}); retrain the model") from exc
        if not isinstance(raw, dict):
            raise ModelError(f"{meta_path} is not a JSON object; retrain the model")
        return cls.from_dict(raw, source=meta_path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: Path | str = METADATA_FILE) -> GuardMetadata:
        """Validate and upgrade a parsed ``topicguard.json`` (``source`` names it in errors)."""
        version = raw.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ModelError(f"{source} has an invalid format_version {version!r}; retrain it")
        if version > FORMAT_VERSION:
            raise ModelError(
                f"{source} was written by a newer topicguard (format {version}; this one reads "
                f"up to {FORMAT_VERSION}): upgrade with `pip install -U topicguard`"
            )
        if "threshold" not in raw:
            raise ModelError(f"{source} has no threshold; retrain the model")
        labels = raw.get("labels") or dict(DEFAULT_LABELS)
        threshold = _number(raw["threshold"])
        if not 0 <= threshold <= 1 or not _valid_labels(labels):
            raise ModelError(f"{source} has an invalid threshold or labels; retrain the model")
        calibration = raw.get("calibration") or {}
        if not isinstance(calibration, dict):
            calibration = {"temperature": None}
        temperature = _number(calibration.get("temperature", 1.0))
        if not 0 < temperature < math.inf:
            folder = Path(source).parent
            raise ModelError(
                f"{source} has an invalid calibration temperature: "
                f"recalibrate with `topicguard calibrate {folder} DATA`"
            )
        max_length = raw.get("max_length", DEFAULT_MAX_LENGTH)
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ModelError(f"{source} has an invalid max_length {max_length!r}; retrain it")
        return cls(
            threshold=threshold,
            labels={"allowed": str(labels["allowed"]), "blocked": str(labels["blocked"])},
            max_length=max_length,
            calibration=dict(calibration),
            threshold_objective=raw.get("threshold_objective"),
            base_model=raw.get("base_model"),
            languages=tuple(str(lang) for lang in raw.get("languages") or ()),
            routing=_routing(raw.get("routing"), source),
            format_version=FORMAT_VERSION,  # upgraded in memory; written as the current one
            details={k: v for k, v in raw.items() if k not in _TYPED},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object to store: the training record first, as ``train`` writes it."""
        typed: dict[str, Any] = {
            "format_version": self.format_version,
            "threshold": self.threshold,
            "threshold_objective": self.threshold_objective,
            "calibration": self.calibration,
            "labels": dict(self.labels),
            "max_length": self.max_length,
            "base_model": self.base_model,
            "languages": list(self.languages),
            "routing": self.routing.to_dict() if self.routing is not None else None,
        }
        return typed | self.details

    def write(self, model_dir: str | Path) -> None:
        """Replace ``MODEL/topicguard.json`` atomically (a crash leaves the old file)."""
        atomic_write_text(
            Path(model_dir) / METADATA_FILE,
            json.dumps(self.to_dict(), indent=2, ensure_ascii=False),
        )

    def with_calibration(self, calibration: dict[str, Any], *, objective: str) -> GuardMetadata:
        """A copy with a new operating point (its ``threshold`` inside ``calibration``)."""
        return replace(
            self,
            threshold=float(calibration["threshold"]),
            threshold_objective=objective,
            calibration=calibration,
        )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _valid_labels(labels: Any) -> bool:
    return isinstance(labels, dict) and {"allowed", "blocked"} <= set(labels)


def _routing(value: Any, source: Path | str) -> Routing | None:
    if not value:
        return None
    if not isinstance(value, dict):
        raise ModelError(f"{source}: routing must be an object; retrain the model")
    band = value.get("second_opinion")
    if band is not None:
        try:
            low, high = (float(x) for x in band)
        except (TypeError, ValueError):
            low = high = math.nan
        if not 0 <= low < high <= 1:
            raise ModelError(
                f"{source}: routing.second_opinion must be two scores "
                f"0 <= low < high <= 1, got {band!r}; fix it or remove it"
            )
        band = (low, high)
    multilingual = value.get("multilingual")
    return Routing(
        fast_languages=tuple(str(x) for x in value.get("fast_languages") or ()),
        multilingual=str(multilingual) if multilingual is not None else None,
        second_opinion=band,
    )
