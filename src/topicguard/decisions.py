"""The decision log: one JSON line per verdict a server gave, written off the request path.

Format (JSON Lines; this module is its one writer and reader)::

    {"time": "2026-01-31T12:00:00.123+00:00", "verdict": "blocked", "score": 0.031,
     "threshold": 0.5, "lang": "en", "model": "3f2a9c1b7d0e", "latency_ms": 4.2,
     "context": true, "text": "…"}

``verdict`` is ``allowed`` or ``blocked``; ``score`` the calibrated probability on topic and
``threshold`` the one it was held to; ``model`` the guard's fingerprint; ``context`` appears
when a conversation's earlier turn let a follow-up through; ``text`` only when the log was
opened with ``texts=True`` (texts are personal data: keep them only where you may).

A request only puts a record on a bounded queue (``put_nowait``: never waits, never raises;
when the writer falls behind, records are dropped and counted). One background thread
(:class:`logging.handlers.QueueListener`) formats them and appends them through a
:class:`logging.handlers.RotatingFileHandler`: past ``max_mb`` the file becomes ``LOG.1``
(then ``LOG.2`` ... up to ``backups``). A write error (a full disk) is logged once and the
record dropped; serving goes on. One process per log file: rotation is not shared safely
between processes.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import queue
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topicguard._exceptions import DataError

if TYPE_CHECKING:
    from topicguard.verdict import Verdict

__all__ = ["DEFAULT_MAX_MB", "Decision", "DecisionLog", "log_files", "read_decisions"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MB = 100.0  # a log file's size before it rotates
DEFAULT_BACKUPS = 5  # rotated files kept: LOG.1 (newest) ... LOG.5 (oldest)
QUEUE_SIZE = 10_000  # records waiting for the writer; beyond this they are dropped


@dataclass(frozen=True)
class Decision:
    """One line of a decision log."""

    time: str
    allowed: bool
    score: float
    threshold: float | None = None
    lang: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    context: bool = False
    text: str | None = None


class DecisionLog:
    """Appends decisions to ``path`` from a background thread; ``record`` never blocks.

    ``DecisionLog(path, texts=False, max_mb=100)``; call :meth:`close` (or use it as a
    context manager) to write what is queued before the process exits.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        texts: bool = False,
        max_mb: float = DEFAULT_MAX_MB,
        backups: int = DEFAULT_BACKUPS,
        model: str | None = None,
    ) -> None:
        if not max_mb > 0 or math.isinf(max_mb):
            raise DataError(f"--log-max-mb must be a positive number of megabytes, not {max_mb}")
        if backups < 1:
            raise DataError(f"keep at least one rotated decision log, not {backups}")
        self.path = Path(path)
        self.texts = texts
        self.model = model
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _FileHandler(
            self.path,
            maxBytes=max(1, int(max_mb * 1024 * 1024)),
            backupCount=backups,
            encoding="utf-8",
        )
        self._file.setFormatter(_JsonFormatter())
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_SIZE)
        self._enqueue = _DropWhenFull(self._queue)
        self._listener = _Writer(self._queue, self._file)
        self._listener.start()
        self._closed = False

    @property
    def dropped(self) -> int:
        """Records lost: the queue was full, or the file could not be written."""
        return self._enqueue.dropped + self._file.failed

    def record(self, verdict: Verdict, *, latency_ms: float) -> None:
        """Queue one decision. Never raises and never waits: at worst the record is dropped."""
        if self._closed:
            return
        row: dict[str, Any] = {
            "verdict": "allowed" if verdict.allowed else "blocked",
            "score": verdict.score,
            "threshold": verdict.threshold,
            "lang": verdict.lang,
            "model": self.model,
            "latency_ms": round(latency_ms, 3),
        }
        if verdict.context:
            row["context"] = True
        if self.texts:
            row["text"] = verdict.text
        try:
            self._enqueue.handle(logging.makeLogRecord({"msg": row}))
        except Exception:  # noqa: BLE001 - a log must never fail a request
            self._enqueue.dropped += 1

    def close(self) -> None:
        """Write what is queued, stop the writer and close the file."""
        if self._closed:
            return
        self._closed = True
        self._listener.stop()
        self._file.close()
        if self.dropped:
            logger.warning("decision log %s: %d decisions were dropped", self.path, self.dropped)

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _DropWhenFull(logging.handlers.QueueHandler):
    """Puts records on the queue as they are (formatting is the writer's job) and drops
    them, counted, when the queue is full."""

    def __init__(self, target: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(target)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Writer(logging.handlers.QueueListener):
    """The background thread. Its stop signal waits for room on a full queue (the stdlib's
    would raise ``queue.Full``): closing writes what is queued, however much."""

    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]


class _FileHandler(logging.handlers.RotatingFileHandler):
    """Counts failed writes and warns once, instead of printing a traceback per record
    (only the writer thread calls it)."""

    failed = 0

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - stdlib's name
        self.failed += 1
        if self.failed == 1:
            logger.warning(
                "cannot write the decision log %s; dropping decisions", self.baseFilename
            )


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
        row = {"time": moment.isoformat(timespec="milliseconds"), **record.msg}  # type: ignore[dict-item]
        return json.dumps(row, ensure_ascii=False)


def log_files(path: str | Path) -> list[Path]:
    """``path`` and its rotated copies (``path.1``, ``path.2`` ...), oldest first."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)$")
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for sibling in path.parent.iterdir():
            match = pattern.match(sibling.name)
            if match and sibling.is_file():
                rotated.append((int(match[1]), sibling))
    files = [p for _, p in sorted(rotated, reverse=True)]
    return files + ([path] if path.is_file() else [])


def read_decisions(paths: Sequence[str | Path]) -> list[Decision]:
    """The decisions in logs ``paths``, each with its rotated copies, oldest first. A line
    cut short by a killed process is skipped with a warning; any other bad line raises
    :class:`DataError` naming it."""
    files: list[Path] = []
    for path in paths:
        found = log_files(path)
        if not found:
            raise DataError(f"decision log not found: {path}")
        files += [f for f in found if f.resolve() not in {g.resolve() for g in files}]
    decisions: list[Decision] = []
    torn = 0
    for file in files:
        for where, row in _rows(file):
            if row is None:
                torn += 1
                continue
            decisions.append(_decision(row, where))
    if torn:
        logger.warning("skipped %d lines that are not JSON (cut short when a server stopped)", torn)
    return decisions


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | None]]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    yield f"{path}:{number}", None
                    continue
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: not a decision log line (not an object)")
                yield f"{path}:{number}", row
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _decision(row: dict[str, Any], where: str) -> Decision:
    verdict, score = row.get("verdict"), row.get("score")
    if verdict not in ("allowed", "blocked") or not isinstance(score, (int, float)):
        raise DataError(
            f"{where}: not a decision log line (needs 'verdict' allowed/blocked and a 'score'); "
            "pass the file that `topicguard serve --log` wrote"
        )
    threshold = row.get("threshold")
    text = row.get("text")
    return Decision(
        time=str(row.get("time", "")),
        allowed=verdict == "allowed",
        score=float(score),
        threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
        lang=row.get("lang") if isinstance(row.get("lang"), str) else None,
        model=row.get("model") if isinstance(row.get("model"), str) else None,
        latency_ms=row.get("latency_ms"),
        context=bool(row.get("context", False)),
        text=text if isinstance(text, str) and text.strip() else None,
    )
