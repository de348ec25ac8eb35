"""The training API under its first name: everything lives in :mod:`topicguard.training`;
this module keeps ``from topicguard.train import TrainConfig, train_guard`` working."""

from __future__ import annotations

from topicguard.training import (
    PRESETS,
    TrainConfig,
    TrainResult,
    data_fingerprint,
    field_help,
    train,
    train_guard,
    train_multilingual,
)

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "data_fingerprint",
    "field_help",
    "train",
    "train_guard",
    "train_multilingual",
]
