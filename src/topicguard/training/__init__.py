"""Training a guard, in parts:

- :mod:`~topicguard.training.config`: :class:`TrainConfig`, the named recipes, precision;
- :mod:`~topicguard.training.loop`: one fine-tuning run;
- :mod:`~topicguard.training.averaging`: checkpoint averaging and soups (pure functions);
- :mod:`~topicguard.training.model`: one encoder into one model folder;
- :mod:`~topicguard.training.guard`: the models a spec's languages need, and its defaults.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from topicguard.training.config import PRESETS, TrainConfig, field_help, resolve_precision

if TYPE_CHECKING:
    from topicguard.training.guard import (
        default_out_dir,
        train_guard,
        train_multilingual,
        train_spec,
    )
    from topicguard.training.model import TrainResult, data_fingerprint, train

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "data_fingerprint",
    "default_out_dir",
    "field_help",
    "resolve_precision",
    "train",
    "train_guard",
    "train_multilingual",
    "train_spec",
]

# the config is light; the rest (calibration, data, numpy) loads when first asked for, so
# that `topicguard --help` stays quick
_LAZY = {
    "default_out_dir": "guard",
    "train_guard": "guard",
    "train_multilingual": "guard",
    "train_spec": "guard",
    "TrainResult": "model",
    "data_fingerprint": "model",
    "train": "model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"topicguard.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'topicguard.training' has no attribute {name!r}")
