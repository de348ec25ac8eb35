"""``TopicGuard``: load a trained guard and classify texts. The CLI, the server and Python
users all go through this one object."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topicguard._exceptions import DataError, ModelError

__all__ = ["TopicGuard", "Verdict"]

logger = logging.getLogger(__name__)

METADATA_FILE = "topicguard.json"


@dataclass(frozen=True)
class Verdict:
    """The guard's decision on one text. ``score`` is the probability that it is on topic."""

    text: str
    label: str
    score: float
    allowed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "score": self.score,
            "allowed": self.allowed,
        }


class TopicGuard:
    """A trained guard. ``TopicGuard.load(DIR).classify(["Where is my parcel?"])``."""

    def __init__(self, model: Any, tokenizer: Any, metadata: dict[str, Any], path: Path) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.metadata = metadata
        self.path = path
        self.threshold = float(metadata["threshold"])
        self.max_length = int(metadata.get("max_length", 128))
        labels = metadata.get("labels", {"allowed": "True", "blocked": "False"})
        self.allowed_label: str = labels["allowed"]
        self.blocked_label: str = labels["blocked"]
        label2id = getattr(model.config, "label2id", None) or {}
        if self.allowed_label not in label2id:
            raise ModelError(
                f"{path}: the model config has no label {self.allowed_label!r} "
                f"(labels: {sorted(label2id)}); retrain it with `topicguard train`"
            )
        self.allowed_index = int(label2id[self.allowed_label])

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None) -> TopicGuard:
        """Load a model folder written by ``topicguard train``. Never touches the network."""
        path = Path(path)
        metadata = read_metadata(path)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        from topicguard.models import load_encoder

        model, tokenizer = load_encoder(str(path))
        model.eval()
        return cls(model, tokenizer, metadata, path)

    def scores(self, texts: Sequence[str], *, batch_size: int = 64) -> Any:
        """Probability on topic for each text (numpy array), in input order."""
        from topicguard.models import score_texts

        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"text {i + 1} is empty: give the guard something to judge")
        if not texts:
            return __import__("numpy").empty(0)
        return score_texts(
            self.model,
            self.tokenizer,
            texts,
            allowed_index=self.allowed_index,
            max_length=self.max_length,
            batch_size=batch_size,
        )

    def classify(self, texts: Sequence[str] | str, *, batch_size: int = 64) -> list[Verdict]:
        """Verdicts at the stored threshold. A single string is treated as a list of one."""
        if isinstance(texts, str):
            texts = [texts]
        scores = self.scores(texts, batch_size=batch_size)
        return [
            Verdict(
                text=text,
                label=self.allowed_label if score >= self.threshold else self.blocked_label,
                score=round(float(score), 6),
                allowed=bool(score >= self.threshold),
            )
            for text, score in zip(texts, scores, strict=True)
        ]

    def __repr__(self) -> str:
        return f"TopicGuard(path={str(self.path)!r}, threshold={self.threshold:.3f})"


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``topicguard.json`` of a model folder, with errors that say what to do."""
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
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_path} is unreadable ({exc}); retrain the model") from exc
    if not isinstance(metadata, dict) or "threshold" not in metadata:
        raise ModelError(f"{meta_path} has no threshold; retrain the model")
    return metadata
