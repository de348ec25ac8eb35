"""Stage 2: an LLM judge reviews every labelled query against the spec's policy.

Three pure steps per row (messages, schema, parse) and a runner. The reviewed file keeps
every input column, moves the generator's label to ``generator_label`` and puts the judge's
verdict in ``label``, so ``topicguard train --data reviewed.jsonl`` trains on the reviewed
labels. A verdict that cannot be parsed is ``null``: such rows are left out of training
(with a warning), never silently relabelled.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from topicguard._exceptions import DataError, LLMError, LLMRequestError
from topicguard._progress import progress_bar
from topicguard.data import parse_label, write_jsonl
from topicguard.llm import LLMClient, LLMSettings, ModeCallback, extract_json, split_reasoning
from topicguard.spec import GuardSpec
from topicguard.templates import render

__all__ = ["JudgeAnswer", "ReviewSummary", "build_messages", "parse_verdict", "review_rows"]

logger = logging.getLogger(__name__)

_VERDICT_KEYS = ("verdict", "label", "on_topic", "relevant", "allowed", "answer", "valid")
_WORDS = {
    "true": True,
    "yes": True,
    "valid": True,
    "allowed": True,
    "relevant": True,
    "false": False,
    "no": False,
    "invalid": False,
    "blocked": False,
    "irrelevant": False,
}
_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
# requests a judge may refuse one by one before its first live answer of the run; the next
# refusal stops the run: a model name or key the endpoint does not take, not the rows
_REFUSALS_BEFORE_ANSWER = 2
# a reasoning judge thinks before it answers: longer than LLMSettings.timeout
REVIEW_TIMEOUT = 300.0


class JudgeAnswer(BaseModel):
    """The judge's answer: short reasoning, then whether the chatbot should answer."""

    reasoning: str = Field(default="", description="one or two sentences")
    verdict: bool = Field(description="true when the chatbot should answer the message")


def build_messages(spec: GuardSpec, text: str) -> list[dict[str, str]]:
    """The judge's prompt for one message: the policy as system message, the text as user."""
    return [
        {"role": "system", "content": render("review_system.jinja", spec=spec)},
        {"role": "user", "content": render("review_user.jinja", text=text)},
    ]


def parse_verdict(answer: str | None) -> bool | None:
    """The judge's verdict in ``answer``, or ``None`` when it gives none (or both).

    Reads, after any ``<think>`` reasoning: a JSON object with a ``verdict`` (or ``label``,
    ``on_topic``…) field; else a verdict word (true/false, yes/no, valid/invalid) on the last
    line that has one, accepted only when that line does not name both sides.
    """
    if not answer or not answer.strip():
        return None
    _, body = split_reasoning(answer)
    value = extract_json(body)
    if isinstance(value, dict):
        for key in _VERDICT_KEYS:
            if key in value:
                try:
                    return parse_label(value[key])
                except ValueError:
                    return None
    for line in reversed([ln for ln in body.splitlines() if ln.strip()]):
        found = {_WORDS[w.lower()] for w in _WORD.findall(line)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


@dataclass
class ReviewSummary:
    """Counts of a review run; ``by_category`` holds disagreements with the generator."""

    n: int
    verdicts: dict[str, int]
    agreements: int
    disagreements: int
    unparsed: int
    by_category: dict[str, dict[str, int]]
    failed: int = 0


def review_rows(
    rows: Sequence[dict[str, Any]],
    spec: GuardSpec,
    settings: Sequence[LLMSettings],
    *,
    votes: int = 1,
    out: Path | None = None,
    checkpoint_every: int = 100,
    on_mode: ModeCallback | None = None,
) -> tuple[list[dict[str, Any]], ReviewSummary, list[Any]]:
    """Judge every row with each judge ``votes`` times; majority verdict (ties: ``None``).

    Returns the reviewed rows, a summary and each judge's usage. With ``out``, the rows
    done so far are written (atomically) every ``checkpoint_every`` rows and at the end;
    answers are cached, so a rerun after a crash pays only for the rows not yet judged.
    A judge's first live call of the run checks its endpoint: when it fails, the run stops
    (a bad key or endpoint), unless the endpoint refused only that request (a text too
    long, say: the row is kept, and a resumed run does not stop on it each time); once it
    has answered, failures leave their row without a verdict. ``on_mode(settings, mode)``
    hears which structured-output mode each judge's endpoint accepted.
    """
    if votes < 1:
        raise DataError(f"--votes must be at least 1, got {votes}")
    for i, row in enumerate(rows, start=1):
        if not str(row.get("text") or "").strip():
            raise DataError(f"row {i} has no text")
    return asyncio.run(
        _review(list(rows), spec, list(settings), votes, out, checkpoint_every, on_mode)
    )


async def _review(
    rows: list[dict[str, Any]],
    spec: GuardSpec,
    settings: list[LLMSettings],
    votes: int,
    out: Path | None,
    checkpoint_every: int,
    on_mode: ModeCallback | None,
) -> Any:
    clients = [LLMClient(s, on_mode=on_mode) for s in settings]
    checks = [_EndpointCheck(s.model) for s in settings]
    reviewed: list[dict[str, Any] | None] = [None] * len(rows)
    multi = len(clients) * votes > 1
    temperature = None if multi else 0.0  # one vote: deterministic; several: sampled

    async def judge(index: int) -> None:
        row = rows[index]
        messages = build_messages(spec, str(row["text"]))
        answers: list[dict[str, Any]] = []
        for client, check in zip(clients, checks, strict=True):
            for sample in range(votes):
                try:
                    completion = await client.complete(
                        messages, schema=JudgeAnswer, temperature=temperature, sample=sample
                    )
                except LLMError as exc:
                    check.failed(exc)  # raises when the run must stop
                    answers.append(
                        {
                            "judge": client.settings.model,
                            "verdict": None,
                            "answer": None,
                            "reasoning": None,
                            "error": str(exc),
                        }
                    )
                    continue
                check.answered = check.answered or not completion.cached
                verdict = (
                    completion.parsed.verdict
                    if completion.parsed is not None
                    else parse_verdict(completion.content)
                )
                answers.append(
                    {
                        "judge": client.settings.model,
                        "verdict": verdict,
                        "answer": completion.content,
                        "reasoning": completion.reasoning or _reasoning_of(completion),
                    }
                )
        reviewed[index] = _combine(row, answers)

    try:
        with progress_bar(len(rows), "review", logger=logger, unit="row") as bar:
            if rows:
                await judge(0)  # fail fast on a bad key or endpoint, before the fan-out
                bar.update(1)
            pending = list(range(1, len(rows)))
            for start in range(0, len(pending), checkpoint_every):
                tasks = [
                    asyncio.ensure_future(judge(i))
                    for i in pending[start : start + checkpoint_every]
                ]
                try:
                    for task in asyncio.as_completed(tasks):
                        await task
                        bar.update(1)
                finally:  # a judge that stops the run: end the rest of the chunk quietly
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                if out is not None:
                    write_jsonl(out, [r for r in reviewed if r is not None])
    finally:
        for client in clients:
            await client.close()
    done = [r for r in reviewed if r is not None]
    if out is not None:
        write_jsonl(out, done)
    return done, _summarise(done), [c.usage for c in clients]


@dataclass
class _EndpointCheck:
    """One judge's endpoint, checked by the run's live calls until one is answered (cached
    answers prove nothing about the key or the endpoint today)."""

    model: str
    answered: bool = False
    refused: int = 0

    def failed(self, exc: LLMError) -> None:
        """Raise when ``exc`` must stop the run; return when it costs only its row."""
        if self.answered:
            return
        if not isinstance(exc, LLMRequestError):
            raise exc  # unreachable, a bad key, an unknown model: not one bad row
        self.refused += 1
        if self.refused > _REFUSALS_BEFORE_ANSWER:
            raise LLMError(
                f"{self.model} refused the first {self.refused} requests of the run ({exc}); "
                "check the model name, the key and the endpoint"
            ) from exc


def _combine(row: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(a["verdict"] for a in answers if a["verdict"] is not None)
    verdict: bool | None = None
    if counts and (len(counts) == 1 or counts[True] != counts[False]):
        verdict = counts.most_common(1)[0][0]
    try:
        generator_label = parse_label(row.get("label"))
    except ValueError:
        generator_label = None
    reviewed = {k: v for k, v in row.items() if k != "label"}
    first = answers[0] if answers else {}
    reviewed.update(
        {
            "label": verdict,
            "generator_label": generator_label,
            "agrees": None
            if verdict is None or generator_label is None
            else verdict == generator_label,
            "review_reasoning": first.get("reasoning"),
            "review_answer": first.get("answer"),
            "review_votes": [
                {"judge": a["judge"], "verdict": a["verdict"]}
                | ({"error": a["error"]} if a.get("error") else {})
                for a in answers
            ],
        }
    )
    return reviewed


def _summarise(rows: list[dict[str, Any]]) -> ReviewSummary:
    by_category: dict[str, dict[str, int]] = defaultdict(
        lambda: {"n": 0, "disagreements": 0, "unparsed": 0}
    )
    for row in rows:
        group = by_category[str(row.get("category") or "(none)")]
        group["n"] += 1
        group["disagreements"] += row["agrees"] is False
        group["unparsed"] += row["label"] is None
    return ReviewSummary(
        n=len(rows),
        verdicts={
            "on_topic": sum(r["label"] is True for r in rows),
            "off_topic": sum(r["label"] is False for r in rows),
        },
        agreements=sum(r["agrees"] is True for r in rows),
        disagreements=sum(r["agrees"] is False for r in rows),
        unparsed=sum(r["label"] is None for r in rows),
        by_category=dict(sorted(by_category.items())),
        failed=sum(
            bool(r["review_votes"]) and all("error" in v for v in r["review_votes"]) for r in rows
        ),
    )


def _reasoning_of(completion: Any) -> str | None:
    parsed = completion.parsed
    return parsed.reasoning if parsed is not None and parsed.reasoning else None
