from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from topicguard import DataError
from topicguard.data import (
    Example,
    normalize_text,
    parse_label,
    read_dataset,
    read_texts,
)
from topicguard.spec import bundled_example, load_spec

from conftest import REFERENCE_DIR, requires_reference, write_rows


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("True", True),
        ("false", False),
        ("1", True),
        (0, False),
        (1.0, True),
        ("yes", True),
        ("NO", False),
        (" true ", True),
        (None, None),
        (float("nan"), None),
        ("", None),
    ],
)
def test_parse_label_accepts_documented_forms(value: object, expected: bool | None) -> None:
    assert parse_label(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, "on-topic", 0.5])
def test_parse_label_rejects_other_values(value: object) -> None:
    with pytest.raises(ValueError):
        parse_label(value)


def test_reads_jsonl_csv_xlsx_and_json_alike(tmp_path: Path, small_rows: list[dict]) -> None:
    import pandas as pd

    jsonl = write_rows(tmp_path / "d.jsonl", small_rows)
    frame = pd.DataFrame(small_rows)
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_excel(tmp_path / "d.xlsx", index=False)
    (tmp_path / "d.json").write_text(json.dumps(small_rows))
    expected = read_dataset(jsonl)
    assert len(expected) == len(small_rows)
    assert expected[0] == Example(text=small_rows[0]["text"], label=True, category="support")
    for name in ("d.csv", "d.xlsx", "d.json"):
        assert read_dataset(tmp_path / name) == expected


def test_reference_style_is_relevant_column_and_label_column(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "d.jsonl",
        [
            {"text": "where is my parcel", "is_relevant": True, "verdict": "False"},
            {"text": "tell me a joke", "is_relevant": False, "verdict": "False"},
        ],
    )
    assert [e.label for e in read_dataset(path)] == [True, False]
    assert [e.label for e in read_dataset(path, label_column="verdict")] == [False, False]


def test_rows_without_text_or_label_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_rows(
        tmp_path / "d.jsonl",
        [
            {"text": "where is my parcel", "label": "yes"},
            {"text": "   ", "label": "yes"},
            {"text": "hello", "label": None},
        ],
    )
    assert [e.text for e in read_dataset(path)] == ["where is my parcel"]
    assert "dropped 1 rows with an empty text" in caplog.text
    assert "dropped 1 rows with no label" in caplog.text


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (
            '{"text": "a", "label": "maybe"}\n{"text": "b", "label": "perhaps"}\n',
            ".jsonl",
            "'maybe' (row 1); 'perhaps' (row 2)",
        ),
        ('{"question": "a", "label": true}\n', ".jsonl", "no 'text' column (columns: question"),
        ('{"text": "a", "verdict": true}\n', ".jsonl", "no label column"),
        ("", ".jsonl", "the dataset is empty"),
        ("not json\n", ".jsonl", ":1: invalid JSON"),
        ("a,b\n", ".docx", "unknown dataset format '.docx'"),
        ("garbage", ".xlsx", "cannot read as xlsx"),
    ],
)
def test_bad_datasets_raise_one_clear_error(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=None) as info:
        read_dataset(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_missing_label_column(tmp_path: Path, small_dataset: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no column 'verdict'"):
        read_dataset(small_dataset, label_column="verdict")


def test_read_texts_from_txt_and_dataset(tmp_path: Path, small_dataset: Path) -> None:
    txt = tmp_path / "t.txt"
    txt.write_text("where is my parcel\n\n  \ntell me a joke\n")
    assert read_texts(txt) == ["where is my parcel", "tell me a joke"]
    assert len(read_texts(small_dataset)) == 16
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no texts"):
        read_texts(tmp_path / "blank.txt")


def test_bundled_dataset_is_large_unique_balanced_and_categorised() -> None:
    spec = load_spec(bundled_example())
    train_paths = spec.train_paths()
    (test_path,) = spec.test_paths()
    train = [e for path in train_paths for e in read_dataset(path)]
    test = read_dataset(test_path)
    examples = train + test
    assert len(train) >= 400 and len(examples) >= 3000
    assert len({normalize_text(e.text) for e in examples}) == len(examples)
    for part in (train, test, examples):
        assert 0.45 <= sum(e.label for e in part) / len(part) <= 0.55
    assert all(e.category and e.lang in spec.languages and e.source == "team" for e in examples)
    by_lang = Counter(e.lang for e in examples)
    assert by_lang["zh"] >= 600 and min(by_lang[x] for x in ("es", "de", "fr")) >= 100
    for lang in spec.languages:  # every language on both sides of the split, both labels
        for part in (train, test):
            assert {e.label for e in part if e.lang == lang} == {True, False}
    for path in (*train_paths, test_path):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert all(set(row) == {"text", "label", "category", "lang", "source"} for row in rows)
    # every kind of test message has training rows (training has kinds the test file lacks)
    assert {e.category for e in test} <= {e.category for e in train}


@requires_reference()
def test_reads_the_reference_spreadsheet_as_the_reference_does() -> None:
    path = REFERENCE_DIR / "rev_guardrail_r1.xlsx"
    generator = read_dataset(path)
    reviewed = read_dataset(path, label_column="r1_review_extracted")
    assert Counter(e.label for e in generator) == {True: 1236, False: 972}
    assert Counter(e.label for e in reviewed) == {True: 1265, False: 942}  # NaN row dropped


def test_reference_data_is_a_setting_not_a_path_beside_the_package(tmp_path, monkeypatch):
    from topicguard.data import REFERENCE_DATA_ENV, REFERENCE_FILE, reference_data

    monkeypatch.delenv(REFERENCE_DATA_ENV, raising=False)
    assert reference_data() is None
    monkeypatch.setenv(REFERENCE_DATA_ENV, str(tmp_path))
    assert reference_data() is None  # the folder is there, the spreadsheet is not
    (tmp_path / REFERENCE_FILE).write_bytes(b"")
    assert reference_data() == tmp_path / REFERENCE_FILE
    assert reference_data(tmp_path / REFERENCE_FILE) == tmp_path / REFERENCE_FILE
    assert reference_data(tmp_path / "missing.xlsx") is None
