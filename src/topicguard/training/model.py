"""Fine-tuning one encoder into one model folder: split and augment the rows, shrink and
prepare the base model, run the fine-tuning runs, keep the averaged or the best weights,
calibrate on validation, and write the folder (weights, tokenizer, ``topicguard.json``)
atomically. :mod:`topicguard.training.guard` decides which models a spec needs."""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from topicguard import __version__
from topicguard._exceptions import DataError, ModelError
from topicguard._io import atomic_dir
from topicguard.augment import count_augmented, is_augmented
from topicguard.calibrate import Calibration, Objective, fit_calibration
from topicguard.data import Example, normalize_text
from topicguard.folder import GuardMetadata, Routing
from topicguard.leakage import split_examples
from topicguard.spec import GuardSpec, LabelNames
from topicguard.training.averaging import add_weights, describe_kept, keep_mean, mean_weights
from topicguard.training.config import LARGE_VOCABULARY, TrainConfig, resolve_precision
from topicguard.training.loop import Clock, FineTuning, RunResult, seed_everything

__all__ = ["TrainResult", "augmented_rows", "check_classes", "data_fingerprint", "train"]

logger = logging.getLogger(__name__)


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
        return describe_kept(
            self.best_epoch, self.averaged_epochs, runs=self.runs, best_run=self.best_run
        )

    # wall seconds of each stage ("load", "epoch 1", ..., "calibrate", "save")
    timings: dict[str, float] = field(default_factory=dict)
    tokens_per_epoch: int = 0  # the training rows' tokens, without padding
    multilingual: TrainResult | None = None  # the multilingual model's own result, if any


@dataclass
class _Kept:
    """The weights training kept and how it got there."""

    best_epoch: int
    best_run: int
    averaged_epochs: list[int]
    history: list[dict[str, float]]
    seconds: float


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
    routing: Routing | None = None,
    include: dict[str, Path] | None = None,
    calibration_languages: Sequence[str] | None = None,
    augmented: bool = False,
) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``examples`` and write the guard to ``out_dir``.

    Without ``validation``, ``config.validation_size`` of ``examples`` is held out, keeping
    near-duplicate clusters on one side. With ``config.augment``, rows made from the training
    rows (:func:`topicguard.augment.augment`) are added to them after the split, unless
    ``augmented`` says that ``examples`` already hold theirs. The kept weights are the mean of
    the last ``config.average_last`` epochs (of every run, with ``config.soup`` runs), unless
    the best single epoch is more accurate on validation by over one standard error; their
    scores are calibrated (temperature scaling) and the decision threshold chosen for
    ``objective`` (default: accuracy) on the same validation rows. The folder is written
    atomically and an existing one is replaced only with ``overwrite``.

    This trains one model; :func:`topicguard.training.train_guard` decides which models a
    spec's languages need. ``routing`` goes into the metadata, ``include`` folders are moved
    inside the model folder (the multilingual model), and ``calibration_languages`` limits
    the rows the calibration is fitted on to the languages this model will serve, when they
    hold both classes.
    """
    config = (config or TrainConfig()).resolved(spec)
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ModelError(f"{out_dir} already exists: pass --overwrite to replace it, or pick --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelError(f"{out_dir} exists and is not a folder")
    train_rows, val_rows = _split(examples, validation, config)
    if config.augment and not augmented:
        train_rows += augmented_rows(train_rows, val_rows, config)
    tuning, freeze = _prepare(config, spec, train_rows, val_rows)
    kept = _fine_tune(tuning, len(val_rows))
    calibration, served = _calibrate(tuning, val_rows, calibration_languages, objective)
    logger.info(
        "kept %s; temperature %.2f (calibration error %.3f -> %.3f), threshold %.3f "
        "(%s) on %d validation rows",
        describe_kept(
            kept.best_epoch, kept.averaged_epochs, runs=config.soup, best_run=kept.best_run
        ),
        calibration.temperature,
        calibration.ece_before,
        calibration.ece_after,
        calibration.threshold,
        calibration.objective,
        len(val_rows),
    )
    record = _record(
        tuning, kept, freeze, train_rows, len(val_rows), data_files, spec, calibration.metrics
    )
    metadata = _metadata(calibration, served, tuning, config, spec, routing, record)
    _save(tuning, metadata, out_dir, overwrite=overwrite, include=include)
    return TrainResult(
        model_dir=out_dir,
        threshold=calibration.threshold,
        validation_metrics=calibration.metrics,
        best_epoch=kept.best_epoch,
        averaged_epochs=kept.averaged_epochs,
        runs=config.soup,
        best_run=kept.best_run,
        train_seconds=kept.seconds,
        n_train=record["data"]["n_train"],
        n_validation=len(val_rows),
        calibration=calibration,
        timings=tuning.clock.timings,
        tokens_per_epoch=sum(tuning.lengths),
    )


def augmented_rows(
    train_rows: Sequence[Example], val_rows: Sequence[Example], config: TrainConfig
) -> list[Example]:
    """The rows augmentation makes from ``train_rows`` (it never sees ``val_rows``), less
    any that matches a validation row but for case and punctuation: validation must not
    score a copy of a training row."""
    from topicguard import augment as augmentation

    made = augmentation.augment(train_rows, seed=config.seed, ratio=config.augment_ratio)
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


def check_classes(examples: Sequence[Example], what: str) -> None:
    n_on = sum(e.label for e in examples)
    n_off = len(examples) - n_on
    if n_on == 0 or n_off == 0:
        raise DataError(
            f"the {what} has only one class ({n_on} on-topic, {n_off} off-topic rows): "
            "a guard needs examples of both"
        )


def _split(
    examples: Sequence[Example], validation: Sequence[Example] | None, config: TrainConfig
) -> tuple[list[Example], list[Example]]:
    check_classes(examples, "training data")
    if validation is None:
        train_rows, val_rows = split_examples(
            examples, test_size=config.validation_size, seed=config.seed
        )
    else:
        train_rows, val_rows = list(examples), list(validation)
    check_classes(train_rows, "training split")
    check_classes(val_rows, "validation split (add rows or raise --validation-size)")
    return list(train_rows), list(val_rows)


def _prepare(
    config: TrainConfig,
    spec: GuardSpec | None,
    train_rows: list[Example],
    val_rows: list[Example],
) -> tuple[FineTuning, bool]:
    """The base model loaded, cut to ``config.layers`` and ``config.vocabulary_size``, its
    embeddings frozen where the vocabulary is large, its rows tokenised once; and whether
    the embeddings are frozen."""
    import numpy as np
    import torch

    from topicguard.models import load_encoder, resolve_base_model
    from topicguard.shrink import drop_layers, freeze_lower_layers, trim_vocabulary

    seed_everything(config.seed)
    clock = Clock()
    labels = spec.labels if spec else LabelNames()
    assert config.base_model is not None  # resolved by the caller
    model, tokenizer = load_encoder(
        resolve_base_model(config.base_model),
        id2label={0: labels.blocked, 1: labels.allowed},
        trust_remote_code=config.trust_remote_code,
    )
    clock.lap("load")
    # decided on the vocabulary as it came: a trimmed multilingual vocabulary keeps its
    # pretrained rows fixed too, so that the rows the training texts never use (kept for
    # real traffic) stay in step with the ones they do
    embeddings: Any = model.get_input_embeddings().weight
    vocabulary = int(embeddings.shape[0])
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
    freeze = (
        vocabulary > LARGE_VOCABULARY
        if config.freeze_embeddings is None
        else config.freeze_embeddings
    )
    if freeze:
        embeddings = model.get_input_embeddings().weight  # the trimmed matrix, if trimmed
        embeddings.requires_grad_(False)
        logger.info("word embeddings (%d tokens) stay fixed", embeddings.shape[0])
    if config.frozen_layers:
        freeze_lower_layers(model, config.frozen_layers)
    texts = [e.text for e in train_rows]
    tokens = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    clock.lap("tokenize")
    tuning = FineTuning(
        model=model,
        tokenizer=tokenizer,
        config=config,
        texts=texts,
        targets=torch.tensor([int(e.label) for e in train_rows]),
        lengths=[len(ids) for ids in tokens],
        max_length=max_length,
        precision=resolve_precision(config.precision),
        val_texts=[e.text for e in val_rows],
        val_labels=np.array([e.label for e in val_rows], dtype=bool),
        clock=clock,
    )
    return tuning, freeze


def _fine_tune(tuning: FineTuning, n_validation: int) -> _Kept:
    """Every run of the soup, then the weights to keep loaded into the model."""
    model, config = tuning.model, tuning.config
    attention = model.config._attn_implementation
    if tuning.precision == "bf16" and hasattr(model, "set_attn_implementation"):
        # PyTorch's fused CPU attention is slow in bfloat16 for short texts (its backward
        # took half of each step on 20-token batches); the plain product-softmax-product
        # runs on the same fast bfloat16 matrix units as the rest
        model.set_attn_implementation("eager")
    start = copy.deepcopy(model.state_dict()) if config.soup > 1 else None
    runs: list[RunResult] = []
    started = time.perf_counter()
    for run in range(config.soup):
        if start is not None and run:
            model.load_state_dict(start)  # every run of a soup starts from the same weights
        runs.append(tuning.run(run))
    seconds = time.perf_counter() - started
    kept = _choose_weights(tuning, runs, n_validation, seconds)
    if model.config._attn_implementation != attention:
        model.set_attn_implementation(attention)
    return kept


def _choose_weights(
    tuning: FineTuning, runs: list[RunResult], n_validation: int, seconds: float
) -> _Kept:
    """Load the mean of the runs' last epochs, or the best single epoch when it is more
    accurate by over one standard error (:func:`keep_mean`)."""
    history = [entry for r in runs for entry in r.history]
    best = max(reversed(runs), key=lambda r: r.best_accuracy)  # ties: the later run
    averaged_epochs = tuning.averaged_epochs
    n_averaged = len(averaged_epochs) * len(runs)
    mean_kept = False
    if n_averaged > 1:
        total: dict[str, Any] = {}
        for r in runs:
            total = add_weights(total, r.weight_sum)
        tuning.model.load_state_dict(mean_weights(total, n_averaged, best.best_state))
        val_loss, accuracy = tuning.validate()
        tuning.clock.lap("average")
        entry = {
            "epoch": averaged_epochs[-1],
            "averaged_epochs": len(averaged_epochs),
            "validation_loss": val_loss,
            "validation_accuracy": accuracy,
        }
        history.append(entry if len(runs) == 1 else {"runs": len(runs)} | entry)
        logger.info(
            "%s: validation loss %.4f, accuracy %.4f",
            describe_kept(best.best_epoch, averaged_epochs, runs=len(runs)),
            val_loss,
            accuracy,
        )
        mean_kept = keep_mean(accuracy, best.best_accuracy, n_validation)
    if not mean_kept:
        averaged_epochs = []
        tuning.model.load_state_dict(best.best_state)
    return _Kept(best.best_epoch, best.run, averaged_epochs, history, seconds)


def _calibrate(
    tuning: FineTuning,
    val_rows: list[Example],
    calibration_languages: Sequence[str] | None,
    objective: Objective | None,
) -> tuple[Calibration, Any]:
    """Temperature and threshold fitted on the validation rows of the languages this model
    serves (all rows when those hold one class only); and which rows those were."""
    import numpy as np

    from topicguard.models import torch_logits

    val_logits = torch_logits(
        tuning.model, tuning.tokenizer, tuning.val_texts, max_length=tuning.max_length
    )
    margins = val_logits[:, 1] - val_logits[:, 0]
    labels = tuning.val_labels
    served = np.array(
        [calibration_languages is None or e.lang in calibration_languages for e in val_rows]
    )
    if labels[served].all() or not labels[served].any():
        served[:] = True  # too few rows in the served languages: calibrate on all of them
    calibration = fit_calibration(labels[served], margins[served], objective)
    tuning.clock.lap("calibrate")
    return calibration, (margins[served], labels[served])


def _record(
    tuning: FineTuning,
    kept: _Kept,
    freeze: bool,
    train_rows: list[Example],
    n_validation: int,
    data_files: Sequence[str],
    spec: GuardSpec | None,
    validation_metrics: dict[str, float],
) -> dict[str, Any]:
    """How the model was trained, for ``topicguard.json``: the config, the history, the
    timings and a fingerprint of the data."""
    given_rows = [e for e in train_rows if not is_augmented(e)]
    return {
        "training": asdict(tuning.config)
        | {"freeze_embeddings": freeze, "precision": tuning.precision},
        "best_epoch": kept.best_epoch,
        "averaged_epochs": kept.averaged_epochs,
        "runs": tuning.config.soup,
        "best_run": kept.best_run,
        "history": kept.history,
        "train_seconds": round(kept.seconds, 2),
        "timings": {k: round(v, 2) for k, v in tuning.clock.timings.items()},
        "tokens_per_epoch": sum(tuning.lengths),
        "data": {
            "fingerprint": data_fingerprint(given_rows),
            "files": [str(f) for f in data_files],
            "n_train": len(given_rows),
            # rows augmentation added to the training rows, by kind (repeats included)
            "augmented": count_augmented(train_rows),
            "n_validation": n_validation,
        },
        "metrics": {"validation": validation_metrics},
        "spec": spec.model_dump(mode="json") if spec else None,
    }


def _metadata(
    calibration: Calibration,
    served: Any,
    tuning: FineTuning,
    config: TrainConfig,
    spec: GuardSpec | None,
    routing: Routing | None,
    record: dict[str, Any],
) -> GuardMetadata:
    margins, labels = served
    labels_names = spec.labels if spec else LabelNames()
    stored = calibration.to_dict() | {
        "data": "validation split",
        # kept so that `topicguard calibrate MODEL --max-f1` (no data) can move the
        # operating point later without retraining
        "validation": {
            "margins": [round(float(m), 5) for m in margins],
            "labels": [bool(y) for y in labels],
        },
    }
    details = {
        "topicguard_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    } | record
    return GuardMetadata(
        threshold=calibration.threshold,
        threshold_objective=calibration.objective,
        calibration=stored,
        labels={"allowed": labels_names.allowed, "blocked": labels_names.blocked},
        max_length=tuning.max_length,
        base_model=config.base_model,
        languages=tuple(spec.languages) if spec else (),
        routing=routing,
        details=details,
    )


def _save(
    tuning: FineTuning,
    metadata: GuardMetadata,
    out_dir: Path,
    *,
    overwrite: bool,
    include: dict[str, Path] | None,
) -> None:
    from topicguard.models import quiet_transformers

    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp, quiet_transformers():
            tuning.model.save_pretrained(tmp, safe_serialization=True)
            tuning.tokenizer.save_pretrained(tmp)
            metadata.write(tmp)
            for name, folder in (include or {}).items():
                shutil.move(str(folder), str(tmp / name))
    except OSError as exc:
        raise ModelError(f"cannot write the model to {out_dir}: {exc}") from exc
    tuning.clock.lap("save")


def _usable_max_length(requested: int, tokenizer: Any, model: Any) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or requested
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 100_000:
        limit = min(limit, tokenizer_limit)
    return min(requested, int(limit))
