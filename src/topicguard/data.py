"""Datasets: reading (JSONL, CSV, XLSX, Parquet), label normalisation, splits, writing.

A dataset has a ``text`` column and a label column (``label``, or the reference's
``is_relevant``, or any column named with ``label_column``). Labels may be booleans or the
strings true/false, 1/0, yes/no in any case. Optional ``category``, ``lang`` and ``source``
columns are kept. Rows are returned as :class:`Example` records.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from topicguard._exceptions import DataError, MissingDependencyError
from topicguard._io import atomic_write_text

__all__ = [
    "Example",
    "clean_texts",
    "normalize_text",
    "parse_label",
    "read_dataset",
    "read_datasets",
    "read_rows",
    "read_texts",
    "reference_data",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".xlsx", ".parquet", ".txt")
LABEL_COLUMNS = ("label", "is_relevant")
OPTIONAL_COLUMNS = ("category", "lang", "source")
_TRUE = {"true", "1", "1.0", "yes", "y", "t"}
_FALSE = {"false", "0", "0.0", "no", "n", "f"}

# Where the reference project's spreadsheets are: a setting, never a path relative to the
# installed package (a pip-installed topicguard has no checkout around it).
REFERENCE_DATA_ENV = "TOPICGUARD_REFERENCE_DATA"
REFERENCE_FILE = "rev_guardrail_r1.xlsx"


@dataclass(frozen=True)
class Example:
    """One labelled query. ``label`` is True when the query is on topic (allowed)."""

    text: str
    label: bool
    category: str | None = None
    lang: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_label(value: Any) -> bool | None:
    """Normalise one label; ``None`` for a missing value; ``ValueError`` if it is not a label."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            return None
        if value in (0, 1):
            return bool(value)
        raise ValueError(value)
    if hasattr(value, "item"):  # numpy scalars from pandas
        return parse_label(value.item())
    text = str(value).strip().lower()
    if text in ("", "nan", "none", "null"):
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def normalize_text(text: str) -> str:
    """Case-, accent-width- and punctuation-insensitive form used to find duplicates."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def read_dataset(
    path: str | Path, *, label_column: str | None = None, strict: bool = False
) -> list[Example]:
    """Read one labelled dataset. Labels that are not labels raise :class:`DataError` naming
    them and their rows (1-based, in file order). Rows with an empty text or a missing label
    are dropped with a warning, or with ``strict`` raise :class:`DataError` naming them."""
    path = Path(path)
    records = _read_records(path)
    if not records:
        raise DataError(f"{path}: the dataset is empty")
    columns = list(dict.fromkeys(key for record in records for key in record))
    if "text" not in columns:
        raise DataError(f"{path}: no 'text' column (columns: {', '.join(map(str, columns))})")
    label_col = _pick_label_column(path, columns, label_column)

    examples: list[Example] = []
    bad: dict[str, list[int]] = defaultdict(list)
    empty: list[int] = []
    missing: list[int] = []
    for row_number, record in enumerate(records, start=1):
        text = record.get("text")
        if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
            empty.append(row_number)
            continue
        try:
            label = parse_label(record.get(label_col))
        except ValueError:
            bad[repr(record.get(label_col))].append(row_number)
            continue
        if label is None:
            missing.append(row_number)
            continue
        extras = {c: _optional_str(record.get(c)) for c in OPTIONAL_COLUMNS}
        examples.append(Example(text=str(text).strip(), label=label, **extras))
    if bad:
        shown = "; ".join(f"{value} ({_rows(rows)})" for value, rows in list(bad.items())[:5])
        n_bad = sum(len(r) for r in bad.values())
        raise DataError(
            f"{path}: {n_bad} row{'s' if n_bad > 1 else ''} with a label that is not "
            f"True/False, 1/0 or yes/no in column {label_col!r}: {shown}"
        )
    for rows, problem in ((empty, "an empty text"), (missing, f"no label in {label_col!r}")):
        # "3 rows with an empty text: rows 2, 5, 9"
        if rows and strict:
            raise DataError(f"{path}: {_count(rows)} {problem}: {_rows(rows)}")
        if rows:
            logger.warning("%s: dropped %d rows with %s", path, len(rows), problem)
    if not examples:
        raise DataError(f"{path}: no usable rows (every row lacks a text or a label)")
    return examples


def read_datasets(
    paths: Sequence[str | Path], *, label_column: str | None = None, strict: bool = False
) -> list[Example]:
    """Read and concatenate several datasets (see :func:`read_dataset`)."""
    if not paths:
        raise DataError("no dataset given: pass at least one file with --data")
    examples: list[Example] = []
    for path in paths:
        examples.extend(read_dataset(path, label_column=label_column, strict=strict))
    return examples


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a dataset as plain dicts (labels optional); every row must have a text."""
    path = Path(path)
    records = _read_records(path)
    if not records:
        raise DataError(f"{path}: the dataset is empty")
    empty = [i for i, r in enumerate(records, start=1) if not _optional_str(r.get("text"))]
    if empty:
        raise DataError(f"{path}: {_count(empty)} an empty text: {_rows(empty)}")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]


def clean_texts(values: Iterable[Any]) -> list[str]:
    """Texts as ``classify`` takes them: strings, stripped, blanks and missing values (None,
    NaN) dropped."""
    return [text for value in values if (text := _optional_str(value))]


def read_texts(path: str | Path, *, allow_empty: bool = False) -> list[str]:
    """Texts to classify: a ``.txt`` file (one per line) or any dataset with a ``text`` column.
    Blank entries are skipped with a warning; a file with no text at all is an error unless
    ``allow_empty`` (one partition of many may be empty)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        _check_readable(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
        values: list[Any] = lines
    else:
        records = _read_records(path)
        columns = list(dict.fromkeys(key for record in records for key in record))
        if records and "text" not in columns:
            raise DataError(f"{path}: no 'text' column (columns: {', '.join(columns)})")
        values = [_optional_str(r.get("text")) for r in records]
    texts = clean_texts(values)
    if len(texts) < len(values):
        logger.warning("%s: skipped %d blank entries", path, len(values) - len(texts))
    if not texts and not allow_empty:
        raise DataError(f"{path}: no texts to classify")
    return texts


def reference_data(path: str | Path | None = None) -> Path | None:
    """The reference project's reviewed queries (``rev_guardrail_r1.xlsx``): ``path`` or else
    ``$TOPICGUARD_REFERENCE_DATA``, each a folder holding the file or the file itself; None
    when neither is set or the file is not there."""
    chosen = path if path is not None else os.environ.get(REFERENCE_DATA_ENV)
    if not chosen:
        return None
    candidate = Path(chosen)
    if candidate.is_dir():
        candidate = candidate / REFERENCE_FILE
    return candidate if candidate.is_file() else None


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSON Lines, atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(Path(path), text)


def _rows(rows: list[int]) -> str:
    """'row 3' or 'rows 3, 7, 9 and 12 more'."""
    shown = ", ".join(str(r) for r in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _count(rows: list[int]) -> str:
    return f"{len(rows)} row{'s' if len(rows) > 1 else ''} with"


def _pick_label_column(path: Path, columns: list[str], label_column: str | None) -> str:
    if label_column is not None:
        if label_column not in columns:
            raise DataError(
                f"{path}: no column {label_column!r} (columns: {', '.join(map(str, columns))})"
            )
        return label_column
    for name in LABEL_COLUMNS:
        if name in columns:
            return name
    raise DataError(
        f"{path}: no label column: expected 'label' or 'is_relevant', or name one with "
        f"--label-column (columns: {', '.join(map(str, columns))})"
    )


def _optional_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")


def _read_records(path: Path) -> list[dict[str, Any]]:
    _check_readable(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS or suffix == ".txt":
        raise DataError(
            f"{path}: unknown dataset format {suffix or '(no extension)'!r}; "
            "use .jsonl, .json, .csv, .tsv, .xlsx or .parquet"
        )
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DataError(f"{path}: a .json dataset must be a list of objects")
            return data
        import pandas as pd

        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(
                path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False
            )
        elif suffix == ".xlsx":
            frame = pd.read_excel(path, engine="openpyxl")
        else:
            try:
                frame = pd.read_parquet(path)
            except ImportError as exc:
                raise MissingDependencyError("pyarrow", "parquet") from exc
    except (DataError, MissingDependencyError):
        raise
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except Exception as exc:  # pandas and openpyxl raise many types for a corrupt file
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: cannot read as {suffix[1:]}: {message}") from exc
    frame.columns = [str(c) for c in frame.columns]
    return frame.to_dict(orient="records")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_number}: invalid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_number}: each line must be a JSON object")
            records.append(record)
    return records
