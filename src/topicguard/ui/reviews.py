"""Review files: texts a person goes through one at a time on the web page, each decision kept
the moment it is made, and the labelled rows saved for ``topicguard train --data``.

A review folder holds, for each file ``NAME.jsonl`` under review::

    NAME.jsonl            the rows: `topicguard feedback`'s output or any JSONL with a `text`
    NAME.progress.jsonl   the decisions, one line each, appended as they are made
    NAME.reviewed.jsonl   the rows labelled so far (`text`, `label`, and `lang`, `category`,
                          `source` when the row has them), written atomically on save

The rows file is never loaded whole: opening it records where each usable row starts, and a
row is read from disk when asked for, so a file of a million rows costs a few megabytes.
Lines that are not a JSON object with a non-empty ``text`` (or whose ``label`` is not a
label) are reported, by line number, and left out.

A progress line is ``{"row": 12, "decision": "allow"}`` (``block``, ``skip``; ``undo`` takes
row 12's decision back), with the time. Each is one ``write`` on a file opened for appending,
under a lock, and flushed to disk before the call returns: concurrent decisions never
interleave, and a crash loses at most the line being written, which the next open skips.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from topicguard._exceptions import DataError
from topicguard.data import OPTIONAL_COLUMNS, parse_label, write_jsonl

__all__ = ["DECISIONS", "ReviewFile", "ReviewFolder"]

logger = logging.getLogger(__name__)

DECISIONS = ("allow", "block", "skip")
UNDO = "undo"
PROGRESS_SUFFIX = ".progress.jsonl"
REVIEWED_SUFFIX = ".reviewed.jsonl"
MALFORMED_SHOWN = 20  # malformed lines named one by one; the rest are counted
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.jsonl")


class ReviewFile:
    """One file under review: its usable rows, read on demand, and the decisions so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.progress_path = path.with_name(path.name[: -len(".jsonl")] + PROGRESS_SUFFIX)
        self.reviewed_path = path.with_name(path.name[: -len(".jsonl")] + REVIEWED_SUFFIX)
        self._offsets = array("q")  # where each usable row starts, in bytes
        self._lines = array("q")  # its line number in the file
        self.malformed: list[tuple[int, str]] = []  # (line, problem), the first few
        self.n_malformed = 0
        self.n_labelled = 0
        self._lock = threading.Lock()  # the decisions and the progress file
        self._save_lock = threading.Lock()
        self._index()
        self.decisions: dict[int, str] = {}  # row -> decision, in the order they were made
        self._replay()

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return len(self._offsets)

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` (0-based, among the usable rows) as it is in the file."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name} has {len(self)} rows: no row {index + 1}")
        with self.path.open("rb") as handle:
            handle.seek(self._offsets[index])
            row: dict[str, Any] = json.loads(handle.readline())
        return row

    def line(self, index: int) -> int:
        """The line in the file that row ``index`` is on (1-based)."""
        return int(self._lines[index])

    def next_row(self) -> int | None:
        """The first row without a decision, or None when every row has one."""
        index = 0
        while index in self.decisions:
            index += 1
        return index if index < len(self) else None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(DECISIONS, 0)
        for decision in self.decisions.values():
            counts[decision] += 1
        return counts

    def decide(self, index: int, decision: str) -> None:
        """Record ``decision`` (allow, block or skip) for row ``index``; a later decision on
        the same row replaces the earlier one."""
        if decision not in DECISIONS:
            raise DataError(f"a decision is one of {', '.join(DECISIONS)}, not {decision!r}")
        if not 0 <= index < len(self):
            raise DataError(f"{self.name} has {len(self)} rows: no row {index + 1}")
        with self._lock:
            self._append({"row": index, "decision": decision})
            self.decisions.pop(index, None)
            self.decisions[index] = decision

    def undo(self) -> int | None:
        """Take back the latest decision still standing; the row it was on, or None."""
        with self._lock:
            if not self.decisions:
                return None
            index = next(reversed(self.decisions))
            self._append({"row": index, "decision": UNDO})
            del self.decisions[index]
            return index

    def save(self) -> int:
        """Write the allowed and blocked rows to :attr:`reviewed_path`, atomically, in file
        order; the number of rows written."""
        with self._save_lock:  # one save at a time: the last one written is the newest
            with self._lock:
                chosen = sorted((i, d) for i, d in self.decisions.items() if d != "skip")
            rows = []
            with self.path.open("rb") as handle:
                for index, decision in chosen:
                    handle.seek(self._offsets[index])
                    rows.append(_labelled(json.loads(handle.readline()), decision == "allow"))
            write_jsonl(self.reviewed_path, rows)
        return len(rows)

    def _append(self, entry: dict[str, Any]) -> None:
        moment = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        data = (json.dumps(entry | {"time": moment}) + "\n").encode("utf-8")
        fd = os.open(self.progress_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and not _ends_with_newline(self.progress_path):
                data = b"\n" + data  # a line cut short by a crash stays on a line of its own
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _index(self) -> None:
        """Find the usable rows; report the others. Raises :class:`DataError` when the file is
        not JSONL at all or no row has a text."""
        objects = 0
        with self.path.open("rb") as handle:
            offset = 0
            for number, raw in enumerate(handle, start=1):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                row, problem = _parse(raw)
                objects += row is not None
                if problem is None:
                    self._offsets.append(start)
                    self._lines.append(number)
                    self.n_labelled += row is not None and row.get("label") is not None
                    continue
                self.n_malformed += 1
                if len(self.malformed) < MALFORMED_SHOWN:
                    self.malformed.append((number, problem))
        if not objects and self.malformed:
            line, problem = self.malformed[0]
            raise DataError(
                f"{self.name} is not JSONL (one JSON object a line): line {line}: {problem}"
            )
        if not self._offsets:
            detail = ""
            if self.malformed:
                line, problem = self.malformed[0]
                detail = f" ({self.n_malformed} lines left out; line {line}: {problem})"
            raise DataError(f"{self.name} has no row with a 'text' to review{detail}")

    def _replay(self) -> None:
        """Rebuild the decisions from the progress file; a line cut short is skipped."""
        if not self.progress_path.is_file():
            return
        torn = 0
        for raw in self.progress_path.read_bytes().splitlines():
            try:
                entry = json.loads(raw)
                index, decision = int(entry["row"]), str(entry["decision"])
            except (ValueError, KeyError, TypeError):
                torn += bool(raw.strip())
                continue
            self.decisions.pop(index, None)
            if decision in DECISIONS and 0 <= index < len(self):
                self.decisions[index] = decision
        if torn:
            logger.warning("%s: skipped %d lines cut short", self.progress_path, torn)


class ReviewFolder:
    """The folder of files under review. ``open`` indexes a file once and keeps it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"cannot use {self.path} as the review folder: {exc.strerror or exc}"
            raise DataError(message) from exc
        self._open: dict[str, ReviewFile] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The files under review, by name."""
        return sorted(
            p.name
            for p in self.path.glob("*.jsonl")
            if _NAME.fullmatch(p.name)
            and not p.name.endswith((PROGRESS_SUFFIX, REVIEWED_SUFFIX))
            and p.is_file()
        )

    def open(self, name: str) -> ReviewFile:
        """The file ``name`` (as :meth:`names` lists it). :class:`DataError` if it is not there
        or cannot be reviewed."""
        if name not in self.names():
            raise FileNotFoundError(f"no file {name!r} under review in {self.path}")
        with self._lock:
            if name not in self._open:
                self._open[name] = ReviewFile(self.path / name)
            return self._open[name]

    def upload(self) -> tuple[int, Path]:
        """A new hidden file in the folder for an upload to stream into: (fd, path)."""
        fd, tmp = tempfile.mkstemp(prefix=".upload.", suffix=".tmp", dir=self.path)
        return fd, Path(tmp)

    def add(self, name: str, upload: Path) -> ReviewFile:
        """Put the uploaded file ``upload`` under review as ``name``, once it has been checked.
        :class:`DataError` for a bad name, a name taken, or a file that cannot be reviewed;
        nothing is left behind then."""
        with self._lock:
            try:
                name = checked_name(name)
                target = self.path / name
                if target.exists():
                    raise DataError(f"a file named {name} is already under review: rename yours")
                os.replace(upload, target)
            except BaseException:
                upload.unlink(missing_ok=True)
                raise
            try:
                self._open[name] = ReviewFile(target)
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            return self._open[name]


def checked_name(name: str) -> str:
    """A file name safe to write in the review folder, or :class:`DataError`."""
    name = Path(name.replace("\\", "/")).name
    if not name.endswith(".jsonl"):
        raise DataError(f"{name or 'the file'}: a review file is JSONL, named NAME.jsonl")
    if not _NAME.fullmatch(name) or name.endswith((PROGRESS_SUFFIX, REVIEWED_SUFFIX)):
        raise DataError(
            f"{name}: name the file with letters, digits, '.', '_' and '-' only (not ending "
            f"in {PROGRESS_SUFFIX} or {REVIEWED_SUFFIX})"
        )
    return name


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The row on one line and the problem that keeps it from review (None: none)."""
    try:
        row = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        return None, f"not JSON ({reason})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    if (b"\\ud" in raw or b"\\uD" in raw) and not _encodable(row):
        return row, "holds a lone surrogate escape (\\ud800-\\udfff): not text"
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        return row, "no 'text'" if text is None else "'text' is empty or not a string"
    try:
        parse_label(row.get("label"))
    except ValueError:
        return row, f"'label' {row.get('label')!r} is not True/False, 1/0 or yes/no"
    return row, None


def _encodable(row: dict[str, Any]) -> bool:
    """Whether the row can be written back as UTF-8 (JSON can escape a lone surrogate)."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _labelled(row: dict[str, Any], allowed: bool) -> dict[str, Any]:
    """The row as `train --data` reads it: text, label, and the optional columns it has."""
    out: dict[str, Any] = {"text": row["text"].strip(), "label": allowed}
    for column in OPTIONAL_COLUMNS:
        if isinstance(row.get(column), str) and row[column].strip():
            out[column] = row[column]
    out.setdefault("source", "review")
    return out


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
