"""Review files (topicguard.ui.reviews): rows read on demand, malformed lines reported,
decisions kept through concurrent saves and crashes, reviewed rows that `train` reads."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from topicguard import DataError
from topicguard.data import read_dataset
from topicguard.ui.reviews import ReviewFile, ReviewFolder, checked_name

from conftest import write_rows

FEEDBACK = [  # what `topicguard feedback` writes: no label
    {"text": "where is my parcel", "lang": "en", "score": 0.48, "verdict": "blocked",
     "count": 3, "reason": "unsure"},
    {"text": "write me a poem", "lang": "en", "score": 0.02, "verdict": "blocked", "count": 1,
     "reason": "blocked"},
    {"text": "¿dónde está mi paquete?", "lang": "es", "score": 0.3, "verdict": "blocked",
     "count": 1, "reason": "blocked"},
    {"text": "my box came crushed", "category": "claims", "count": 1, "reason": "unsure",
     "score": 0.6, "verdict": "allowed"},
]  # fmt: skip


def _review(tmp_path: Path, rows: list[dict] = FEEDBACK) -> ReviewFile:
    return ReviewFile(write_rows(tmp_path / "to_review.jsonl", rows))


def test_decisions_undo_and_saved_rows_that_train_reads(tmp_path: Path) -> None:
    review = _review(tmp_path)
    assert len(review) == 4 and review.next_row() == 0 and review.n_labelled == 0
    review.decide(0, "allow")
    review.decide(1, "block")
    review.decide(2, "skip")
    assert review.next_row() == 3
    assert review.undo() == 2  # the latest decision still standing
    assert review.next_row() == 2
    review.decide(2, "allow")
    review.decide(3, "block")
    review.decide(1, "allow")  # a row decided again: the later decision counts
    assert review.next_row() is None
    assert review.counts() == {"allow": 3, "block": 1, "skip": 0}
    assert review.save() == 4
    saved = [json.loads(line) for line in review.reviewed_path.read_text().splitlines()]
    assert saved[0] == {"text": "where is my parcel", "label": True, "lang": "en",
                        "source": "review"}  # fmt: skip
    assert saved[3] == {"text": "my box came crushed", "label": False, "category": "claims",
                        "source": "review"}  # fmt: skip
    examples = read_dataset(review.reviewed_path, strict=True)
    assert [e.label for e in examples] == [True, True, True, False]
    assert [e.text for e in examples] == [r["text"] for r in FEEDBACK]
    # the progress survives: a new reader (a restarted server) finds every decision
    again = ReviewFile(review.path)
    assert again.decisions == review.decisions
    assert list(again.decisions) == list(review.decisions)  # the order undo follows too
    assert again.undo() == 1


def test_skipped_rows_are_not_saved_and_undo_of_nothing_is_none(tmp_path: Path) -> None:
    review = _review(tmp_path)
    assert review.undo() is None
    review.decide(0, "skip")
    assert review.save() == 0
    assert review.reviewed_path.read_text() == ""
    with pytest.raises(DataError, match="one of allow, block, skip"):
        review.decide(1, "maybe")
    with pytest.raises(DataError, match="no row 5"):
        review.decide(4, "allow")


def test_malformed_lines_are_reported_by_line_and_left_out(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"text": "where is my parcel", "label": True}),
        "{not json",
        "",
        json.dumps(["a", "list"]),
        json.dumps({"question": "no text column"}),
        json.dumps({"text": "   "}),
        json.dumps({"text": "hello", "label": "perhaps"}),
        json.dumps({"text": "a poem please", "label": "no"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    review = ReviewFile(path)
    assert len(review) == 2 and review.n_labelled == 2
    assert review.row(1) == {"text": "a poem please", "label": "no"}
    assert review.line(1) == 8
    assert review.n_malformed == 5
    problems = dict(review.malformed)
    assert problems[2].startswith("not JSON")
    assert problems[4] == "not a JSON object"
    assert problems[5] == "no 'text'"
    assert problems[6] == "'text' is empty or not a string"
    assert "'perhaps' is not True/False" in problems[7]


def test_a_lone_surrogate_is_not_text_but_an_escaped_emoji_is(tmp_path: Path) -> None:
    path = tmp_path / "escapes.jsonl"
    path.write_bytes(b'{"text": "lone \\ud800 half"}\n{"text": "parcel \\ud83d\\udce6 late"}\n')
    review = ReviewFile(path)
    assert len(review) == 1 and review.row(0)["text"] == "parcel \U0001f4e6 late"
    assert review.malformed == [(1, "holds a lone surrogate escape (\\ud800-\\udfff): not text")]
    review.decide(0, "allow")
    review.save()  # writable: every row kept is UTF-8
    assert read_dataset(review.reviewed_path)[0].text == "parcel \U0001f4e6 late"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text,label\nwhere is my parcel,true\n", "is not JSONL .* line 1: not JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "is not JSONL"),
        (b'{"question": "where is my parcel"}\n', "has no row with a 'text' .*line 1: no 'text'"),
        (b"", "has no row with a 'text'"),
        (b"\n\n", "has no row with a 'text'"),
    ],
)
def test_a_file_that_cannot_be_reviewed_says_why(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        ReviewFile(path)


def test_concurrent_decisions_and_saves_lose_nothing(tmp_path: Path) -> None:
    rows = [{"text": f"message {i}"} for i in range(400)]
    review = _review(tmp_path, rows)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(offset, len(rows), 8):
                review.decide(i, "allow" if i % 3 else "block")
                review.save()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(review.decisions) == 400
    # the file saved last holds every decision, whole and in file order
    saved = [json.loads(line) for line in review.reviewed_path.read_text().splitlines()]
    assert [r["text"] for r in saved] == [r["text"] for r in rows]
    assert [r["label"] for r in saved] == [bool(i % 3) for i in range(400)]
    # every progress line is whole: no two writes interleaved
    lines = review.progress_path.read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["decision"] for line in lines)
    assert ReviewFile(review.path).decisions.keys() == review.decisions.keys()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_crash_mid_write_loses_only_the_line_being_written(tmp_path: Path) -> None:
    review = _review(tmp_path)
    review.decide(0, "allow")
    review.decide(1, "block")
    with review.progress_path.open("ab") as handle:  # the process died inside a write
        handle.write(b'{"row": 2, "deci')
    again = ReviewFile(review.path)
    assert again.decisions == {0: "allow", 1: "block"}
    again.decide(2, "allow")  # the next line starts on a line of its own
    assert ReviewFile(review.path).decisions == {0: "allow", 1: "block", 2: "allow"}


def test_a_crash_mid_save_keeps_the_previous_saved_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    review = _review(tmp_path)
    review.decide(0, "allow")
    review.save()
    before = review.reviewed_path.read_text()
    review.decide(1, "block")

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        review.save()
    monkeypatch.undo()
    assert review.reviewed_path.read_text() == before  # whole, not half-written
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert ReviewFile(review.path).decisions == {0: "allow", 1: "block"}  # progress kept


def test_folder_lists_opens_and_adds_files(tmp_path: Path) -> None:
    folder = ReviewFolder(tmp_path / "reviews")
    assert folder.names() == []
    fd, upload = folder.upload()
    with os.fdopen(fd, "wb") as handle:
        handle.write(json.dumps({"text": "where is my parcel"}).encode() + b"\n")
    review = folder.add("feedback.jsonl", upload)
    assert folder.names() == ["feedback.jsonl"] and len(review) == 1
    review.decide(0, "allow")
    review.save()
    # progress and reviewed files are not files under review themselves
    assert folder.names() == ["feedback.jsonl"]
    assert folder.open("feedback.jsonl") is review
    with pytest.raises(FileNotFoundError):
        folder.open("other.jsonl")
    fd, upload = folder.upload()
    os.close(fd)
    with pytest.raises(DataError, match="already under review"):
        folder.add("feedback.jsonl", upload)
    assert not upload.exists()
    fd, upload = folder.upload()
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"not json\n")
    with pytest.raises(DataError, match="not JSONL"):
        folder.add("broken.jsonl", upload)
    assert not upload.exists() and folder.names() == ["feedback.jsonl"]  # nothing left behind


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("feedback.jsonl", "feedback.jsonl"),
        ("C:\\Users\\me\\to_review.jsonl", "to_review.jsonl"),
        ("../../etc/evil.jsonl", "evil.jsonl"),
    ],
)
def test_names_are_reduced_to_a_safe_file_name(name: str, expected: str) -> None:
    assert checked_name(name) == expected


@pytest.mark.parametrize(
    "name", ["data.csv", "", ".hidden.jsonl", "a b.jsonl", "x.progress.jsonl", "x.reviewed.jsonl"]
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(DataError):
        checked_name(name)
