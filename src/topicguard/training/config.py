"""How to fine-tune: :class:`TrainConfig` (every field with its help text, which the CLI's
options reuse), the named recipes (:data:`PRESETS`) and what ``precision`` means on this CPU."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from topicguard._exceptions import DataError

if TYPE_CHECKING:
    from topicguard.spec import GuardSpec

__all__ = ["PRECISIONS", "PRESETS", "TrainConfig", "field_help", "resolve_precision"]

# A multilingual vocabulary (multilingual-e5: 250k tokens, 96M of its 118M parameters) is
# mostly rows that a few thousand queries never touch; AdamW's state and weight decay over
# them cost ~4x the step time and only drift the tokens the data does not teach.
LARGE_VOCABULARY = 100_000
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """How to fine-tune. Defaults are tuned for short chat queries and a small encoder on CPU."""

    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Hugging Face id or local folder of the encoder to fine-tune; default: the "
            "spec's base_model, else sentence-transformers/all-MiniLM-L6-v2 (installed with "
            "topicguard)"
        },
    )
    epochs: int = field(default=4, metadata={"help": "passes over the training data"})
    average_last: int = field(
        default=3,
        metadata={
            "help": "also try the mean of the last N epochs' weights (checkpoint averaging: "
            "steadier than any one epoch) and keep it unless one epoch is more accurate on "
            "validation by over one standard error; 1 keeps single epochs only"
        },
    )
    soup: int = field(
        default=1,
        metadata={
            "help": "fine-tune N runs that differ only in data order and dropout, from the same "
            "start, and average their weights (a model soup: steadier from seed to seed); "
            "in a routed guard, both models are soups"
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "peak AdamW learning rate"})
    # 32, not 16: half the optimizer steps, and bfloat16 products pay off on larger
    # matrices (measured on e5, 2 cores: an epoch 1.8x faster in bf16 at 32 than fp32 at 16)
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    max_length: int = field(
        default=128, metadata={"help": "tokens per text; longer texts are truncated"}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps warming up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    validation_size: float = field(
        default=0.1,
        metadata={"help": "share of the data held out to pick checkpoint and threshold"},
    )
    seed: int = field(default=42, metadata={"help": "seed for the split, the head and the order"})
    fast_languages: list[str] = field(
        default_factory=lambda: ["en"],
        metadata={
            "help": "languages the base model serves; the spec's other languages go to a "
            "second model fine-tuned from multilingual-e5-small"
        },
    )
    multilingual_repeat: int = field(
        default=2,
        metadata={
            "help": "times the multilingual model sees each training row in a language only "
            "it serves: those rows are a third of the data (English teaches the task, they "
            "teach the languages); validation rows are never repeated"
        },
    )
    freeze_embeddings: bool | None = field(
        default=None,
        metadata={
            "help": "keep the word-embedding matrix fixed; default: only for vocabularies "
            f"over {LARGE_VOCABULARY:,} tokens (multilingual models)"
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "allow model code from the hub (only for trusted models)"}
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "arithmetic of the training steps: bf16 (mixed precision: weights and "
            "optimizer stay fp32, matrix products in bfloat16: an epoch of e5 1.55x faster "
            "at batch 32) or fp32; "
            "auto: bf16 where the CPU multiplies bfloat16 natively (AMX or AVX512-BF16), "
            "else fp32. Validation, calibration and the saved weights are always fp32"
        },
    )
    layers: int | None = field(
        default=None,
        metadata={
            "help": "keep only the lower N encoder layers of the base model before fine-tuning "
            "(layer dropping: faster to train and to run); default: all"
        },
    )
    vocabulary_size: int | None = field(
        default=None,
        metadata={
            "help": "trim the base model's vocabulary to N tokens (the training texts' own, "
            "then the most frequent ones of the spec's languages); SentencePiece models only; "
            "default: whole"
        },
    )
    multilingual_layers: int | None = field(
        default=None,
        metadata={"help": "encoder layers the multilingual model keeps, of its 12 (0: all)"},
    )
    frozen_layers: int | None = field(
        default=None,
        metadata={
            "help": "keep the lower N encoder layers (and the embeddings) fixed while "
            "fine-tuning: no backward pass through them; default: none"
        },
    )
    multilingual_frozen_layers: int | None = field(
        default=None,
        metadata={"help": "lower encoder layers the multilingual model keeps fixed (0: none)"},
    )
    multilingual_epochs: int | None = field(
        default=None,
        metadata={"help": "passes the multilingual model makes over its data (0: --epochs)"},
    )
    # 32,000 of 250k: the folder's multilingual model shrinks from ~470 MB to ~130 MB (the
    # kept tokens are the training texts' own, then the spec's languages' most frequent)
    multilingual_vocabulary: int | None = field(
        default=32_000,
        metadata={
            "help": "tokens the multilingual model's vocabulary keeps, of its 250k "
            "(0: all; most of its size is the vocabulary of ~100 languages)"
        },
    )
    augment: bool = field(
        default=True,
        metadata={
            "help": "add training rows made from the training rows (never from validation): "
            "on-topic queries joined with a blocked request (blocked) or with a greeting or "
            "thanks (label kept), and typing noise (typos, no capitals or punctuation; for "
            "Chinese: punctuation width, spaces, traditional characters)"
        },
    )
    augment_ratio: float = field(
        default=0.15,
        metadata={
            "help": "augmented rows made, as a share of the training rows of each language "
            "(at most; fewer where the data lacks rows to make them from)"
        },
    )

    def validate(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.average_last < 1:
            problems.append(f"average-last must be at least 1, got {self.average_last}")
        if self.soup < 1:
            problems.append(f"soup must be at least 1, got {self.soup}")
        if self.batch_size < 1:
            problems.append(f"batch size must be at least 1, got {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning rate must be in (0, 1), got {self.learning_rate}")
        if not 0 < self.validation_size < 1:
            problems.append(f"validation size must be in (0, 1), got {self.validation_size}")
        if self.multilingual_repeat < 1:
            problems.append(
                f"multilingual repeat must be at least 1, got {self.multilingual_repeat}"
            )
        if self.precision not in PRECISIONS:
            problems.append(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.max_length < 8:
            problems.append(f"max length must be at least 8 tokens, got {self.max_length}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warm-up ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.augment_ratio <= 1:
            problems.append(f"augment ratio must be in [0, 1], got {self.augment_ratio}")
        for name in (
            "layers",
            "multilingual_layers",
            "frozen_layers",
            "multilingual_frozen_layers",
            "multilingual_epochs",
            "vocabulary_size",
            "multilingual_vocabulary",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                what = name.replace("_", " ")
                problems.append(f"{what} must be at least 1 (or 0 for all), got {value}")
        if problems:
            raise DataError("; ".join(problems))

    def resolved(self, spec: GuardSpec | None = None) -> TrainConfig:
        """This config with its base model decided: its own, else the spec's, else the
        packaged default (:data:`topicguard.models.DEFAULT_BASE_MODEL`)."""
        if self.base_model:
            return self
        from topicguard.models import DEFAULT_BASE_MODEL

        chosen = (spec.base_model if spec is not None else None) or DEFAULT_BASE_MODEL
        return replace(self, base_model=chosen)

    @classmethod
    def from_preset(cls, name: str = "default", **overrides: Any) -> TrainConfig:
        """The config of a named recipe (:data:`PRESETS`), with ``overrides`` on top; an
        override of ``None`` means "the preset's value"."""
        if name not in PRESETS:
            raise DataError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise DataError(f"unknown training setting(s): {', '.join(unknown)}")
        values = PRESETS[name] | {k: v for k, v in overrides.items() if v is not None}
        return cls(**values)


def field_help(name: str) -> str:
    """The help text of a :class:`TrainConfig` field (the CLI's options reuse it)."""
    for item in fields(TrainConfig):
        if item.name == name:
            return str(item.metadata["help"])
    raise KeyError(name)


# Named recipes; a field a preset does not name keeps the TrainConfig default above, which
# is the "default" preset: the guard that ships (docs/results.md, "Training speed"). "light"
# cuts the multilingual model and its passes: quicker, but it made more errors on the bundled
# test file, most of them in the multilingual model's languages.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # the multilingual model cut to 8 of its 12 layers (6 lost 20 of 661 non-English
    # validation rows, 8 lost 5), fewer passes
    "light": {
        "epochs": 3,
        "average_last": 2,
        "multilingual_layers": 8,
        "multilingual_epochs": 2,
        "multilingual_repeat": 1,
    },
    # for iterating on data: a quick look at what the guard gets wrong, not the shipped guard
    "fast": {
        "epochs": 1,
        "average_last": 1,
        "multilingual_layers": 4,
        "multilingual_epochs": 1,
        "multilingual_repeat": 1,
    },
}


def resolve_precision(precision: str) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (one of :data:`PRECISIONS`) means on
    this CPU. ``auto`` picks bf16 only where the CPU multiplies bfloat16 natively (AMX or
    AVX512-BF16); elsewhere PyTorch emulates it and fp32 is faster."""
    if precision != "auto":
        return precision
    import torch

    cpu: Any = torch.cpu
    try:
        native = bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())
    except AttributeError:  # a PyTorch without these probes: stay on the safe side
        native = False
    return "bf16" if native else "fp32"
