"""Batch scoring of partitioned datasets: ``topicguard classify MODEL --input DIR_OR_GLOB
--output DIR [--engine local|ray]``.

Input: a folder (every ``.jsonl``, ``.csv`` and ``.parquet`` file in it) or a glob, each
file a partition with a ``text`` column. Output: a folder of Parquet (default) or JSONL
partitions with the columns of ``classify``'s output (``text``, ``label``, ``score``,
``allowed``, and ``lang``, ``lang_supported`` for a guard that knows languages). Blank
texts are skipped, as ``classify --input`` skips them. The output folder appears whole or
not at all: it is written beside itself and renamed at the end.

Engines: ``local`` classifies the partitions one after another in this process (no Ray);
``ray`` (:mod:`topicguard.integrations.ray`) reads them with Ray Data and classifies them with
``map_batches`` over a pool of actors that each load the guard once. Both judge the same
texts with the same guard, so they give the same verdicts.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topicguard._exceptions import DataError

__all__ = ["ENGINES", "OUTPUT_FORMATS", "PARTITION_FORMATS", "ScoreJob", "find_partitions", "score"]

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
OUTPUT_FORMATS = ("parquet", "jsonl")
PARTITION_FORMATS = (".jsonl", ".csv", ".parquet")


@dataclass
class ScoreJob:
    """What to score, where to write it and how."""

    model_dir: Path
    partitions: list[Path]
    output: Path
    output_format: str = "parquet"
    engine: str = "local"
    backend: str = "auto"
    threads: int | None = None
    second_opinion: bool = True
    batch_size: int = 256  # texts per map_batches call (ray) or classify call (local)
    actors: int | None = None  # ray: guard actors (default: one per CPU of the cluster)
    overwrite: bool = False


def find_partitions(source: str | Path) -> list[Path]:
    """The partition files of a folder or a glob, sorted; a clear error when there are none
    or when one has a format that is not a partition format."""
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in PARTITION_FORMATS)
        if not found:
            raise DataError(
                f"{path}: no partitions in this folder (looked for "
                f"{', '.join(PARTITION_FORMATS)} files)"
            )
        return found
    found = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file())
    if not found:
        raise DataError(
            f"{source}: matches no file; pass a folder or a glob such as 'logs/*.jsonl'"
        )
    odd = [p for p in found if p.suffix.lower() not in PARTITION_FORMATS]
    if odd:
        raise DataError(
            f"{odd[0]}: not a partition format; use {', '.join(PARTITION_FORMATS)} "
            "(or a glob that leaves it out)"
        )
    return found


def score(job: ScoreJob) -> int:
    """Score every partition of ``job`` into ``job.output``; the number of texts scored."""
    from topicguard._io import atomic_dir

    if job.engine not in ENGINES:
        raise DataError(f"unknown engine {job.engine!r}: use {' or '.join(ENGINES)}")
    if job.output_format not in OUTPUT_FORMATS:
        raise DataError(f"unknown output format {job.output_format!r}: use parquet or jsonl")
    if job.output.exists() and not job.overwrite:
        raise DataError(f"{job.output} exists: pick a new folder or pass --overwrite")
    output = job.output.resolve()
    for partition in job.partitions:  # --overwrite would replace the input with the scores
        if output in partition.resolve().parents:
            raise DataError(
                f"--output {job.output} holds the input {partition}: write to another folder"
            )
    if job.engine == "ray":
        from topicguard.integrations.ray import require_ray, score_with_ray

        require_ray()  # before anything is written
        run = score_with_ray
    else:
        run = _score_locally
    with atomic_dir(job.output, overwrite=job.overwrite) as tmp:
        count = run(job, tmp)
    logger.info("%d texts scored into %s", count, job.output)
    return count


def verdict_rows(guard: Any, texts: list[str], batch_size: int) -> list[dict[str, Any]]:
    """``classify``'s output rows for ``texts``."""
    return [v.to_dict() for v in guard.classify(texts, batch_size=min(batch_size, 64))]


def write_partition(
    rows: list[dict[str, Any]], path: Path, output_format: str, columns: list[str]
) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)  # an empty partition keeps the columns
    if output_format == "parquet":
        from topicguard._exceptions import MissingDependencyError

        try:
            frame.to_parquet(path, index=False)
        except ImportError as exc:
            raise MissingDependencyError("pyarrow", "parquet") from exc
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)


def _score_locally(job: ScoreJob, out: Path) -> int:
    from topicguard.data import read_texts
    from topicguard.runtime import TopicGuard

    guard = TopicGuard.load(
        job.model_dir, backend=job.backend, threads=job.threads, second_opinion=job.second_opinion
    )
    columns = ["text", "label", "score", "allowed"]
    if guard.languages:
        columns += ["lang", "lang_supported"]
    count = 0
    for index, path in enumerate(job.partitions):  # one partition in memory at a time
        texts = read_texts(path, allow_empty=True)  # an empty one: an empty partition, as on Ray
        rows: list[dict[str, Any]] = []
        for start in range(0, len(texts), job.batch_size):
            rows += verdict_rows(guard, texts[start : start + job.batch_size], job.batch_size)
        target = out / f"part-{index:05d}.{job.output_format}"
        write_partition(rows, target, job.output_format, columns)
        count += len(rows)
    return count
