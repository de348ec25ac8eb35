"""Training speed: where `topicguard train`'s time goes, and what each recipe buys.

For each preset named, trains the whole guard on the bundled example (both models when the
spec lists languages beyond English) and reports, per model: wall seconds per stage (load,
vocabulary trim, tokenise, each epoch, validation passes, averaging, calibration, saving),
training tokens per second, and the validation rows' errors; for the guard: total wall time,
errors per language on the validation rows (the routed guard, as it will serve), the model
folder's size, and with ``--export`` the int8 export's time and the folder's size after it.
The machine's speed is recorded for scale: the median time of a fixed batch through the
default encoder (``machine_ms``), so runs on different machines can be compared as ratios.

    python benchmarks/train_speed.py [--presets default light fast] [--seeds 42] [--export] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common


def main(argv: list[str] | None = None) -> int:
    from topicguard.training import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["default"], choices=list(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--base-model", default=None, help="fast model (default: the preset's)")
    parser.add_argument("--limit", type=int, default=None, help="training rows (a quick look)")
    parser.add_argument("--export", action="store_true", help="also time the int8 export")
    parser.add_argument("--part", choices=["guard", "multilingual"], default="guard",
                        help="train the whole guard, or only its multilingual model")  # fmt: skip
    parser.add_argument("--keep", type=Path, default=None, help="keep the guards in this folder")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override TrainConfig fields, e.g. multilingual_layers=8")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    _common.quiet_logging(args.json)

    from topicguard import TopicGuardError

    try:
        result = run(args)
    except TopicGuardError as exc:
        return _common.failed(exc)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, row in result["runs"].items():
            print(f"{name}: {row['minutes']:.1f} min, {row['folder_mb']:.0f} MB, "
                  f"validation errors {row['validation_errors']}")  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    import os

    from topicguard.data import read_datasets
    from topicguard.spec import bundled_example, load_spec

    spec = load_spec(bundled_example())
    examples = read_datasets(spec.train_paths())
    if args.limit:
        examples = examples[:: max(len(examples) // args.limit, 1)]
    overrides = dict(_parse_override(item) for item in args.set)
    result: dict[str, Any] = {
        "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
        "date": _common.today(),
        "cpus": os.cpu_count(),
        "machine": _common.machine(),
        "machine_ms": round(machine_ms(), 2),
        "n_rows": len(examples),
        "overrides": overrides,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        for preset in args.presets:
            for seed in args.seeds:
                name = f"{preset}-{seed}"
                result["runs"][name] = one_run(
                    spec, examples, root / name, preset, seed, args, overrides
                )
    return result


def one_run(
    spec: Any,
    examples: list[Any],
    out: Path,
    preset: str,
    seed: int,
    args: argparse.Namespace,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    from topicguard.training import TrainConfig, train_guard, train_multilingual

    config = TrainConfig.from_preset(
        preset, seed=seed, base_model=args.base_model or spec.base_model, **overrides
    )
    started = time.perf_counter()
    if args.part == "multilingual":
        slow = [lang for lang in spec.languages if lang not in config.fast_languages]
        trained = train_multilingual(examples, out, config, languages=slow, spec=spec)
        models = {"multilingual": trained}
    else:
        trained = train_guard(examples, out, config, spec=spec, overwrite=True)
        models = {"fast": trained}
        if trained.multilingual is not None:
            models["multilingual"] = trained.multilingual
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {
        "preset": preset,
        "seed": seed,
        "config": {k: v for k, v in vars(config).items() if k != "trust_remote_code"},
        "minutes": round(seconds / 60, 2),
        "models": {name: _model_row(result) for name, result in models.items()},
    }
    row |= _validation_errors(out, examples, config, whole_guard=args.part == "guard")
    row["folder_mb"] = round(_size_mb(out), 1)
    if args.export:
        from topicguard.export import export_guard

        started = time.perf_counter()
        reports = export_guard(out, int8=True, keep_fp32=True)
        row["export_minutes"] = round((time.perf_counter() - started) / 60, 2)
        # with every graph (--keep-fp32), then as `export --int8` leaves it: the fp32 graph
        # only where the int8 copy was refused
        row["folder_mb_exported_with_fp32"] = round(_size_mb(out), 1)
        for report in reports:
            if report.int8_path is not None:
                report.path.unlink()
        row["folder_mb_exported"] = round(_size_mb(out), 1)
    return row


def _model_row(result: Any) -> dict[str, Any]:
    epochs = {k: v for k, v in result.timings.items() if "epoch" in k}
    epoch_seconds = sum(epochs.values())
    tokens = result.tokens_per_epoch * len(epochs)
    return {
        "minutes": round(sum(result.timings.values()) / 60, 2),
        "stages_seconds": {k: round(v, 1) for k, v in result.timings.items()},
        "tokens_per_epoch": result.tokens_per_epoch,
        "tokens_per_second": round(tokens / epoch_seconds) if epoch_seconds else None,
        "n_train": result.n_train,
        "n_validation": result.n_validation,
        "validation_accuracy": round(result.validation_metrics.get("accuracy", float("nan")), 4),
        "kept": result.kept,
    }


def _validation_errors(
    out: Path, examples: list[Any], config: Any, *, whole_guard: bool = True
) -> dict[str, Any]:
    """The routed guard's errors, at its own thresholds, on the rows that its models held
    out: each fast-language row from the fast model's split, every other row from the
    multilingual model's (the two models split different row sets). For the multilingual
    model alone: its own validation rows, every language."""
    from topicguard import TopicGuard
    from topicguard.leakage import split_examples

    fast = set(config.fast_languages)
    fast_rows = [e for e in examples if e.lang is None or e.lang in fast]
    _, fast_val = split_examples(fast_rows, test_size=config.validation_size, seed=config.seed)
    _, all_val = split_examples(examples, test_size=config.validation_size, seed=config.seed)
    validation = fast_val + [e for e in all_val if e.lang is not None and e.lang not in fast]
    if not whole_guard:
        validation = all_val
    guard = TopicGuard.load(out, backend="torch")
    verdicts = guard.classify([e.text for e in validation])
    errors: dict[str, int] = {}
    counts: dict[str, int] = {}
    for example, verdict in zip(validation, verdicts, strict=True):
        lang = example.lang or "en"
        counts[lang] = counts.get(lang, 0) + 1
        errors[lang] = errors.get(lang, 0) + int(verdict.allowed != example.label)
    return {
        "validation_rows": counts,
        "validation_errors": errors,
        "validation_errors_total": sum(errors.values()),
    }


def machine_ms(repeats: int = 7) -> float:
    """Median milliseconds of one fixed batch (32 short queries) through the default
    encoder's forward pass in PyTorch: a yardstick for this machine's speed."""
    import torch

    from topicguard.models import load_encoder, resolve_base_model

    model, tokenizer = load_encoder(resolve_base_model(None), num_labels=2)
    model.eval()
    batch = tokenizer(
        [f"where is my parcel number {i}, it was due on monday" for i in range(32)],
        padding=True,
        return_tensors="pt",
    )
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            model(**batch)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


def _parse_override(item: str) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


if __name__ == "__main__":
    raise SystemExit(main())
