"""Stage 1: an LLM writes balanced batches of on- and off-topic queries for a spec.

Diversity by construction: batch ``i`` is steered to its own slice (topic on each side ×
tone × length × phrasing × language), with a set share of messages naming the company, of
hard negatives and of jailbreak attempts (``generation`` in the spec). Exact and
near-duplicates are dropped across batches. Rows are written after every wave of batches,
atomically, and answers are cached, so an interrupted run resumes without paying twice.
The first batch of a run goes alone: a bad key or endpoint stops the run before anything is
written, and the endpoint's structured-output mode is learnt with one call, not one per
batch of the first wave. Failed batches count against the run's batch budget; as many
failing in a row as a wave holds (at least 3, so that one failure does not end a run of
one batch at a time) stop the run with the rows so far.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from topicguard._exceptions import DataError, LLMError
from topicguard._progress import progress_bar
from topicguard.data import normalize_text, write_jsonl
from topicguard.leakage import near_duplicates
from topicguard.llm import LLMClient, LLMSettings, ModeCallback, Usage
from topicguard.spec import GuardSpec
from topicguard.templates import render

__all__ = [
    "BatchSlice",
    "GeneratedBatch",
    "build_messages",
    "generate_rows",
    "parse_batch",
    "plan_slice",
]

logger = logging.getLogger(__name__)

TONES = ("neutral", "polite", "angry", "confused", "hurried", "formal", "chatty")
LENGTHS = (
    "one to three words",
    "a short sentence",
    "one or two sentences",
    "a long message of three to six sentences",
    "a mix of short and long",
)
PHRASINGS = (
    "questions",
    "imperative commands",
    "lowercase texting with typos and no punctuation",
    "non-native English",
    "a mix of questions and commands",
)


class GeneratedQuery(BaseModel):
    text: str = Field(min_length=1)
    on_topic: bool
    category: str = "unknown"


class GeneratedBatch(BaseModel):
    """The generator's answer: a list of labelled queries."""

    queries: list[GeneratedQuery]


@dataclass(frozen=True)
class BatchSlice:
    """What one batch is steered towards."""

    index: int
    on_focus: str
    off_focus: str
    tone: str
    length: str
    phrasing: str
    language: str
    n_on: int
    n_off: int
    n_hard: int
    n_jailbreak: int


def plan_slice(spec: GuardSpec, index: int, *, batch_size: int, seed: int) -> BatchSlice:
    """The slice of batch ``index``: topics cycle in order, style picked by a seeded draw."""
    rng = random.Random(f"{seed}:{index}")
    g = spec.generation
    n_on = batch_size // 2
    n_off = batch_size - n_on
    return BatchSlice(
        index=index,
        on_focus=spec.allowed_topics[index % len(spec.allowed_topics)],
        off_focus=spec.blocked_topics[index % len(spec.blocked_topics)],
        tone=rng.choice(TONES),
        length=rng.choice(LENGTHS),
        phrasing=rng.choice(PHRASINGS),
        language=spec.languages[index % len(spec.languages)],
        n_on=n_on,
        n_off=n_off,
        n_hard=round(n_off * g.hard_negative_share),
        n_jailbreak=round(n_off * g.jailbreak_share),
    )


def build_messages(spec: GuardSpec, batch: BatchSlice) -> list[dict[str, str]]:
    """The generator's prompt for one batch."""
    user = render(
        "generate_user.jinja",
        spec=spec,
        company_share_pct=round(100 * spec.generation.company_mention_share),
        **vars(batch),
    )
    return [
        {"role": "system", "content": render("generate_system.jinja", spec=spec)},
        {"role": "user", "content": user},
    ]


def parse_batch(
    parsed: GeneratedBatch | None, batch: BatchSlice, source: str
) -> list[dict[str, Any]]:
    """Rows of one batch; an unparsed answer gives no rows (the run makes another batch)."""
    if parsed is None:
        return []
    return [
        {
            "text": " ".join(q.text.split()),
            "label": q.on_topic,
            "category": q.category,
            "lang": batch.language,
            "source": source,
            "batch": batch.index,
        }
        for q in parsed.queries
        if q.text.strip()
    ]


@dataclass
class GenerationStats:
    batches: int = 0
    failed_batches: int = 0
    unparsed_batches: int = 0
    duplicates_dropped: int = 0


def generate_rows(
    spec: GuardSpec,
    settings: LLMSettings,
    n: int,
    *,
    out: Path,
    batch_size: int | None = None,
    seed: int = 0,
    resume: bool = False,
    near_duplicate_threshold: float = 0.85,
    on_mode: ModeCallback | None = None,
) -> tuple[list[dict[str, Any]], GenerationStats, Usage]:
    """Generate until ``n`` unique rows exist in ``out`` (or the batch budget is spent).

    ``on_mode(settings, mode)`` hears which structured-output mode the endpoint accepted.
    """
    if n < 1:
        raise DataError(f"--n must be positive, got {n}")
    size = batch_size or spec.generation.batch_size
    if size < 2:
        raise DataError(f"batch size must be at least 2, got {size}")
    rows: list[dict[str, Any]] = []
    if resume and out.is_file():
        from topicguard.data import read_rows

        rows = read_rows(out)
        logger.info("resuming with %d rows from %s", len(rows), out)
    return asyncio.run(
        _generate(spec, settings, n, out, size, seed, rows, near_duplicate_threshold, on_mode)
    )


async def _generate(
    spec: GuardSpec,
    settings: LLMSettings,
    n: int,
    out: Path,
    size: int,
    seed: int,
    rows: list[dict[str, Any]],
    threshold: float,
    on_mode: ModeCallback | None,
) -> Any:
    client = LLMClient(settings, on_mode=on_mode)
    stats = GenerationStats()
    errors: list[LLMError] = []
    seen = {normalize_text(str(r["text"])) for r in rows}
    next_index = 1 + max((int(r.get("batch", -1)) for r in rows), default=-1)
    # room for failed and duplicate batches: four times the batches the missing rows need
    # (a resumed run is sized by what it lacks, not by the whole --n)
    budget = next_index + math.ceil(max(0, n - len(rows)) / size) * 4 + 4
    wave = max(1, settings.concurrency)
    stop_after = max(wave, 3)  # failed batches in a row that stop the run
    failed_in_a_row = 0

    async def one(index: int) -> list[dict[str, Any]] | None:
        batch = plan_slice(spec, index, batch_size=size, seed=seed)
        try:
            completion = await client.complete(
                build_messages(spec, batch), schema=GeneratedBatch, sample=0
            )
        except LLMError as exc:
            if client.usage.calls == 0:
                raise  # a bad key or endpoint: stop before anything is written
            stats.failed_batches += 1
            errors.append(exc)
            return None
        if completion.parsed is None:
            stats.unparsed_batches += 1
            logger.debug(
                "batch %d: no parseable JSON (finish: %s)", index, completion.finish_reason
            )
        return parse_batch(completion.parsed, batch, settings.model)

    try:
        with progress_bar(
            n, "generate", logger=logger, unit="row", initial=min(len(rows), n)
        ) as bar:
            index = next_index
            while len(rows) < n and index < budget:
                alone = index == next_index  # the run's first batch: see the docstring
                indices = list(range(index, min(index + (1 if alone else wave), budget)))
                index = indices[-1] + 1
                results = await asyncio.gather(*(one(i) for i in indices))
                if all(result is None for result in results):
                    failed_in_a_row += len(indices)
                else:
                    failed_in_a_row = 0
                if failed_in_a_row >= stop_after:
                    raise LLMError(
                        f"the last {failed_in_a_row} batches all failed ({errors[-1]}); "
                        f"{len(rows)} rows are in {out}: rerun with --resume once the "
                        "endpoint answers"
                    )
                stats.batches += len(indices)
                before = len(rows)
                candidates = [row for result in results for row in (result or [])]
                accepted = _deduplicate(candidates, rows, seen, threshold)
                stats.duplicates_dropped += len(candidates) - len(accepted)
                rows.extend(accepted[: n - len(rows)])
                write_jsonl(out, rows)
                bar.update(len(rows) - before)
    finally:
        await client.close()
    if len(rows) < n:
        raise LLMError(
            f"only {len(rows)} of {n} rows after {stats.batches} batches "
            f"({stats.failed_batches} failed, {stats.unparsed_batches} unparsed, "
            f"{stats.duplicates_dropped} duplicates); they are in {out}: rerun with --resume"
        )
    return rows, stats, client.usage


def _deduplicate(
    candidates: list[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    seen: set[str],
    threshold: float,
) -> list[dict[str, Any]]:
    """The candidates that repeat neither a kept row nor an earlier candidate, exactly or
    nearly; ``seen`` (normalised texts) is updated with those accepted."""
    fresh = []
    for row in candidates:
        key = normalize_text(row["text"])
        if key and key not in seen:
            seen.add(key)
            fresh.append(row)
    if not fresh:
        return []
    texts = [str(r["text"]) for r in rows] + [str(r["text"]) for r in fresh]
    offset = len(rows)
    rejected: set[int] = set()
    for pair in sorted(near_duplicates(texts, threshold=threshold), key=lambda p: p.second):
        # keep the earlier text of a pair unless it was itself rejected
        if pair.second >= offset and pair.first not in rejected:
            rejected.add(pair.second)
    for index in rejected:
        seen.discard(normalize_text(texts[index]))
    return [row for i, row in enumerate(fresh) if offset + i not in rejected]
