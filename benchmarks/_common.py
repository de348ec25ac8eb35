"""What the benchmark scripts share: their command-line options, where the reference data is,
the bundled example's English rows, and the record of a run (command, UTC date, CPU count,
machine) that ``results/*.json`` carries and ``benchmarks/render.py`` prints under each table.

Not a benchmark itself: the scripts beside it import it (``python benchmarks/NAME.py`` puts
this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
# the reference project's verdicts (DeepSeek R1's, reviewed) in rev_guardrail_r1.xlsx
REFERENCE_LABEL = "r1_review_extracted"
REFERENCE_HELP = (
    "the reference project's reviewed queries, rev_guardrail_r1.xlsx, or the folder holding it "
    "(default: $TOPICGUARD_REFERENCE_DATA)"
)

T = TypeVar("T")


class MissingReference(Exception):
    """The reference data is neither given nor set: the benchmark cannot run."""


def parser(doc: str | None, *options: str) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc``, with ``--json`` and
    each option named: ``model`` (a trained guard folder, positional), ``reference``,
    ``base-model``, ``epochs``, ``seed`` (defaults from ``TrainConfig``) and ``limit``."""
    parsed = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    unknown = set(options) - {"model", "reference", "base-model", "epochs", "seed", "limit"}
    if unknown:
        raise ValueError(f"unknown benchmark options: {sorted(unknown)}")
    if "model" in options:
        parsed.add_argument("model", type=Path, help="a trained guard folder")
    if {"base-model", "epochs", "seed"} & set(options):
        from topicguard.training import TrainConfig

        defaults = TrainConfig()
        if "base-model" in options:
            parsed.add_argument("--base-model", default=defaults.base_model, help="ID or PATH")
        if "epochs" in options:
            parsed.add_argument("--epochs", type=int, default=defaults.epochs)
        if "seed" in options:
            parsed.add_argument("--seed", type=int, default=defaults.seed)
    if "limit" in options:
        parsed.add_argument("--limit", type=int, help="rows per dataset (a quick look)")
    if "reference" in options:
        parsed.add_argument("--reference", type=Path, help=REFERENCE_HELP)
    parsed.add_argument("--json", action="store_true", help="print one JSON object")
    return parsed


def failed(exc: BaseException) -> int:
    """One line on stderr for an error the user can fix, and the exit code 1."""
    print(f"error: {exc}", file=sys.stderr)
    return 1


def quiet_logging(as_json: bool) -> None:
    """Progress on stderr for people; warnings only when the output is JSON for a file."""
    logging.basicConfig(level=logging.WARNING if as_json else logging.INFO, format="%(message)s")


def reference_file(path: str | Path | None = None) -> Path:
    """The reference spreadsheet: ``path`` (the file or its folder), else the
    ``TOPICGUARD_REFERENCE_DATA`` setting. Raises :class:`MissingReference` saying how to
    point at it when neither names an existing file."""
    from topicguard.data import REFERENCE_DATA_ENV, REFERENCE_FILE, reference_data

    found = reference_data(path)
    if found is None:
        setting = os.environ.get(REFERENCE_DATA_ENV)
        if path is not None or setting:
            given = path if path is not None else f"{REFERENCE_DATA_ENV}={setting}"
            where = f"{given} is neither {REFERENCE_FILE} nor a folder holding it"
        else:
            where = f"{REFERENCE_DATA_ENV} is not set"
        raise MissingReference(
            f"no reference data ({where}): set {REFERENCE_DATA_ENV} to the folder holding "
            f"{REFERENCE_FILE}, or pass --reference FILE"
        )
    return found


def read_reference(path: str | Path | None = None) -> list[Any]:
    """The reference project's reviewed rows, labelled by its reviewed verdicts."""
    from topicguard.data import read_dataset

    return read_dataset(reference_file(path), label_column=REFERENCE_LABEL)


def english(examples: Sequence[T]) -> list[T]:
    """The English rows (and those without a language): the reference is English, so
    comparisons with it use these, the fast model's rows."""
    return [e for e in examples if getattr(e, "lang", None) in (None, "en")]


def bundled(part: str, *, english_only: bool = False) -> list[Any]:
    """The bundled example's ``train`` or ``test`` rows (its spec's paths)."""
    from topicguard.data import read_datasets
    from topicguard.spec import bundled_example, load_spec

    spec = load_spec(bundled_example())
    paths = spec.train_paths() if part == "train" else spec.test_paths()
    rows = read_datasets(paths)
    return english(rows) if english_only else rows


def sample(rows: Sequence[T], limit: int | None) -> list[T]:
    """At most ``limit`` rows spread evenly over ``rows`` (all of them without a limit)."""
    if limit is None or limit >= len(rows):
        return list(rows)
    if limit <= 0:
        return []
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


def shown(path: str | Path) -> str:
    """``path`` as a command run from the repository's root would name it."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU count and model, system, Python."""
    return {
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def today() -> str:
    """The date of a run, in UTC."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def run_record(command: str) -> dict[str, Any]:
    """The record of one run: ``command``, ``date`` (UTC), ``cpus`` and ``machine``."""
    info = machine()
    return {"command": command, "date": today(), "cpus": info["cpus"], "machine": info}


def write_result(
    path: Path, command: str, result: Any = None, *, skipped: str | None = None
) -> dict[str, Any]:
    """Write ``results/NAME.json``: the run's record and its ``result`` (what the benchmark
    printed with ``--json``), or ``skipped`` with the reason it could not run. Atomic: a
    failed write leaves the former file."""
    from topicguard._io import atomic_write_text

    record = run_record(command)
    record |= {"skipped": skipped} if skipped is not None else {"result": result}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return record
