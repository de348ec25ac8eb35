"""Choosing what in a decision log is worth a look: the feedback half of the loop

    serve --log-texts ─▶ decisions.jsonl ─feedback─▶ to_review.jsonl ─review─▶ reviewed.jsonl
    ─▶ train --data base.jsonl --data reviewed.jsonl

Selection: texts the guard was unsure of (score inside a band around the threshold) come
first, then texts it blocked (a false block is a customer refused), each group most frequent
first; texts that are the same or nearly the same (:func:`topicguard.leakage.duplicate_clusters`)
collapse into one row that counts them. Confidently allowed texts are left out: a leak is
rarely confident, and most traffic is those.

Each row written is ``{"text", "lang", "score", "verdict", "count", "reason"}`` without a
label: ``topicguard review`` (an LLM judge) or a person adds it, and the reviewed file trains.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from topicguard._exceptions import DataError
from topicguard.data import normalize_text, write_jsonl
from topicguard.decisions import Decision
from topicguard.leakage import DEFAULT_THRESHOLD, duplicate_clusters

__all__ = [
    "DEFAULT_UNSURE_BAND",
    "UNSURE_MARGIN",
    "FeedbackRow",
    "select_for_review",
    "write_feedback",
]

# Unsure: a score within this distance of the threshold the log recorded for it ...
UNSURE_MARGIN = 0.25
# ... or, for a log without thresholds, inside this band.
DEFAULT_UNSURE_BAND = (0.25, 0.75)
UNSURE, BLOCKED = "unsure", "blocked"


@dataclass(frozen=True)
class FeedbackRow:
    """One text to review, standing for ``count`` logged decisions alike."""

    text: str
    lang: str | None
    score: float
    verdict: str
    count: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_for_review(
    decisions: Sequence[Decision],
    *,
    unsure: bool = True,
    blocked: bool = True,
    band: tuple[float, float] | None = None,
    sample: int | None = None,
    similarity: float = DEFAULT_THRESHOLD,
) -> list[FeedbackRow]:
    """The decisions worth a look, near-duplicates collapsed: unsure ones first (score in
    ``band``; by default within ``UNSURE_MARGIN`` of each decision's threshold), then blocked
    ones, each group most frequent first; at most ``sample`` rows. Decisions without a
    text are skipped; a log with no texts at all raises :class:`DataError`."""
    if not (unsure or blocked):
        raise DataError("select unsure texts, blocked texts or both")
    if band is not None and not 0 <= band[0] < band[1] <= 1:
        raise DataError(f"the unsure band must be LOW:HIGH with 0 <= LOW < HIGH <= 1, not {band}")
    if sample is not None and sample < 1:
        raise DataError(f"--sample must be at least 1, not {sample}")
    with_text = [d for d in decisions if d.text]
    if decisions and not with_text:
        raise DataError(
            "the decision log has no texts: it was written without --log-texts; "
            "restart `topicguard serve --log FILE --log-texts` to collect them"
        )
    wanted = {UNSURE} if not blocked else {BLOCKED} if not unsure else {UNSURE, BLOCKED}
    chosen = [(d, r) for d in with_text if (r := _reason(d, band)) in wanted]
    # exact duplicates (after normalisation) first: a busy log repeats texts by the thousand
    groups: dict[str, list[tuple[Decision, str]]] = defaultdict(list)
    for decision, reason in chosen:
        groups[normalize_text(decision.text or "") or (decision.text or "")].append(
            (decision, reason)
        )
    keys = list(groups)
    clusters: dict[int, list[tuple[Decision, str]]] = defaultdict(list)
    for key, cluster in zip(keys, duplicate_clusters(keys, threshold=similarity), strict=True):
        clusters[cluster] += groups[key]
    rows = [_row(members) for members in clusters.values()]
    rows.sort(key=lambda r: (r.reason != UNSURE, -r.count, r.text))
    return rows[:sample] if sample is not None else rows


def write_feedback(rows: Sequence[FeedbackRow], out: str | Path) -> None:
    """Write the rows as JSON Lines, atomically: the file appears whole or not at all."""
    write_jsonl(out, (row.to_dict() for row in rows))


def _reason(decision: Decision, band: tuple[float, float] | None) -> str | None:
    if band is None:
        if decision.threshold is not None:
            band = (decision.threshold - UNSURE_MARGIN, decision.threshold + UNSURE_MARGIN)
        else:
            band = DEFAULT_UNSURE_BAND
    if band[0] <= decision.score <= band[1]:
        return UNSURE
    return None if decision.allowed else BLOCKED


def _row(members: list[tuple[Decision, str]]) -> FeedbackRow:
    texts = Counter(d.text for d, _ in members)
    langs = Counter(d.lang for d, _ in members if d.lang)
    allowed = sum(d.allowed for d, _ in members)
    score = math.fsum(d.score for d, _ in members) / len(members)
    return FeedbackRow(
        text=str(texts.most_common(1)[0][0]),
        lang=langs.most_common(1)[0][0] if langs else None,
        score=round(score, 6),
        verdict="allowed" if allowed * 2 > len(members) else "blocked",
        count=len(members),
        reason=UNSURE if any(r == UNSURE for _, r in members) else BLOCKED,
    )
