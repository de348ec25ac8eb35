from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from topicguard.cli import app

from conftest import write_rows

runner = CliRunner()

CONTRACT_KEYS = {
    "n",
    "accuracy",
    "f1",
    "f1_weighted",
    "precision",
    "recall",
    "false_block_rate",
    "leak_rate",
    "roc_auc",
}


def test_train_command_writes_a_model(tiny_bert: Path, small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "guard"
    args = [
        "train",
        "--data",
        str(small_dataset),
        "--base-model",
        str(tiny_bert),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--validation-size",
        "0.25",
        "--max-length",
        "32",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"model: {out}" in result.stdout
    assert "threshold" in result.stdout
    assert (out / "topicguard.json").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert "already exists: pass --overwrite" in again.stderr
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_train_label_column(tiny_bert: Path, tmp_path: Path, small_rows: list[dict]) -> None:
    rows = [dict(r, label=None, verdict=r["label"]) for r in small_rows]
    data = write_rows(tmp_path / "d.jsonl", rows)
    base = [
        "train",
        "--data",
        str(data),
        "--base-model",
        str(tiny_bert),
        "--epochs",
        "1",
        "--validation-size",
        "0.25",
        "--max-length",
        "32",
    ]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--label-column", "verdict"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "no usable rows" in result.stderr


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"text": "a", "label": "maybe"}], "with a label that is not True/False"),
        (
            [{"text": "where is my parcel", "label": True}, {"text": "hi", "label": True}],
            "only one class",
        ),
        ([{"question": "a", "label": True}], "no 'text' column"),
    ],
)
def test_train_bad_data_fails_in_one_line(
    tiny_bert: Path, tmp_path: Path, rows: list[dict], message: str
) -> None:
    data = write_rows(tmp_path / "d.jsonl", rows)
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--base-model",
            str(tiny_bert),
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()


def test_evaluate_json_contract_and_report(
    tiny_guard: Path, small_dataset: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(tiny_guard),
            str(small_dataset),
            "--json",
            "--report",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert CONTRACT_KEYS <= set(summary)
    assert summary["n"] == 16
    assert "categories" in summary
    assert (tmp_path / "r" / "report.md").is_file()
    table = runner.invoke(app, ["evaluate", str(tiny_guard), str(small_dataset)])
    assert table.exit_code == 0
    assert "false_block_rate" in table.stdout


def test_classify_arguments_input_file_and_output(tiny_guard: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "classify",
            str(tiny_guard),
            "What is the status of my package?",
            "Can you write me a Python script to analyze data?",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in lines] == [
        "What is the status of my package?",
        "Can you write me a Python script to analyze data?",
    ]
    assert all(
        set(row) == {"text", "label", "score", "allowed", "lang", "lang_supported"} for row in lines
    )
    assert lines[0]["lang"] == "en" and lines[0]["lang_supported"] is True
    texts = tmp_path / "in.txt"
    texts.write_text("where is my parcel\n\nhello there\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["classify", str(tiny_guard), "--input", str(texts), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == [
        "where is my parcel",
        "hello there",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "text 1 is empty"),
        ([], "nothing to classify"),
    ],
)
def test_classify_bad_input(tiny_guard: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["classify", str(tiny_guard), *args])
    assert result.exit_code == 1
    assert message in result.stderr


def test_commands_reject_a_folder_that_is_not_a_model(tmp_path: Path, small_dataset: Path) -> None:
    for args in (
        ["classify", str(tmp_path), "hello"],
        ["evaluate", str(tmp_path), str(small_dataset)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert "not a topicguard model" in result.stderr


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from topicguard.cli import main; sys.argv[0] = 'topicguard'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_console_script_usage_errors_are_one_line(tmp_path: Path) -> None:
    result = _run("evaluate", str(tmp_path), str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    result = _run("classify", str(tmp_path / "nope"), "hi")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: model folder not found: {tmp_path / 'nope'}"


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from topicguard.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_data_check_reports_and_strict_fails_on_duplicates(tmp_path: Path) -> None:
    rows = [
        {"text": "Where is my parcel?", "label": True, "category": "tracking", "lang": "en"},
        {"text": "where is my parcel", "label": False, "category": "tracking", "lang": "en"},
        {"text": "What's the difference between express and standard shipping?", "label": True},
        {"text": "What is the difference between standard and express shipping", "label": True},
        {"text": "tell me a joke", "label": False, "category": "fun", "lang": "en"},
    ]
    data = write_rows(tmp_path / "d.jsonl", rows)
    result = runner.invoke(app, ["data", "check", str(data), "--json", "--threshold", "0.7"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 5
    assert report["labels"] == {"on_topic": 3, "off_topic": 2}
    assert report["exact_duplicate_groups"] == 1
    assert report["conflicting_label_groups"] == 1
    assert report["near_duplicate_pairs"] == 1
    assert report["examples"]["conflicts"][0][0]["row"] == 1
    assert report["categories"]["tracking"] == {"on_topic": 1, "off_topic": 1}
    assert report["languages"] == {"(none)": 2, "en": 3}
    assert report["clean"] is False
    strict = runner.invoke(app, ["data", "check", str(data), "--strict"])
    assert strict.exit_code == 1
    assert "conflicting labels (--strict)" in strict.stderr
    assert "texts with conflicting labels: 1" in strict.stdout


def test_bundled_dataset_passes_data_check_strict() -> None:
    from topicguard.spec import bundled_example, load_spec

    spec = load_spec(bundled_example())
    files = [str(p) for p in spec.train_paths() + spec.test_paths()]
    result = runner.invoke(app, ["data", "check", *files, "--strict"])
    assert result.exit_code == 0, result.output


def test_data_split_writes_two_files(tmp_path: Path, small_dataset: Path) -> None:
    result = runner.invoke(
        app,
        [
            "data",
            "split",
            str(small_dataset),
            "--test-size",
            "0.25",
            "--out",
            str(tmp_path / "split"),
        ],
    )
    assert result.exit_code == 0, result.output
    train = (tmp_path / "split" / "train.jsonl").read_text().splitlines()
    test = (tmp_path / "split" / "test.jsonl").read_text().splitlines()
    assert len(train) + len(test) == 16
    assert len(test) == 4
    assert {json.loads(line)["label"] for line in test} == {True, False}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [
                {"text": "a", "label": True},
                {"text": " ", "label": False},
                {"text": "", "label": True},
            ],
            "2 rows with an empty text: rows 2, 3",
        ),
        ([{"text": "a", "label": "maybe"}, {"text": "b", "label": "maybe"}], "'maybe' (rows 1, 2)"),
        ([{"text": "a", "label": True}, {"text": "b"}], "1 row with no label in 'label': row 2"),
    ],
)
def test_data_commands_name_bad_rows(tmp_path: Path, rows: list[dict], message: str) -> None:
    data = write_rows(tmp_path / "d.jsonl", rows)
    for args in (
        ["data", "check", str(data)],
        ["data", "split", str(data), "--out", str(tmp_path / "o")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert message in result.stderr
    assert not (tmp_path / "o").exists()


def test_data_commands_reject_missing_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "d.docx").write_text("x")
    result = runner.invoke(app, ["data", "check", str(tmp_path / "d.docx")])
    assert result.exit_code == 1
    assert "unknown dataset format '.docx'" in result.stderr
    result = _run("data", "check", str(tmp_path / "missing.csv"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_evaluate_on_one_class_data_gives_valid_json(tiny_guard: Path, tmp_path: Path) -> None:
    data = write_rows(
        tmp_path / "d.jsonl",
        [{"text": "where is my parcel", "label": True}, {"text": "track SB123", "label": True}],
    )
    result = runner.invoke(
        app, ["evaluate", str(tiny_guard), str(data), "--json", "--report", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["roc_auc"] is None and summary["leak_rate"] is None
    assert "| roc_auc | n/a |" in (tmp_path / "r" / "report.md").read_text()
    assert runner.invoke(app, ["evaluate", str(tiny_guard), str(data)]).exit_code == 0


def test_output_problems_are_one_line(
    tiny_guard: Path, small_dataset: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    result = runner.invoke(
        app, ["data", "split", str(small_dataset), "--out", str(blocked / "split")]
    )
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    result = runner.invoke(
        app, ["classify", str(tiny_guard), "hi", "--output", str(tmp_path / "v.csv")]
    )
    assert result.exit_code == 1 and "name it *.jsonl" in result.stderr
    result = runner.invoke(app, ["serve", str(tiny_guard), "--backend", "onnx"])
    assert result.exit_code == 1 and "run `topicguard export" in result.stderr


def test_corrupt_metadata_is_a_clear_error(tiny_guard: Path, tmp_path: Path) -> None:
    import shutil

    broken = Path(shutil.copytree(tiny_guard, tmp_path / "broken"))
    meta = json.loads((broken / "topicguard.json").read_text())
    meta["threshold"] = "high"
    (broken / "topicguard.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["classify", str(broken), "hi"])
    assert result.exit_code == 1 and "invalid threshold" in result.stderr


def test_logging_after_a_command_finds_the_current_stderr(
    small_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    assert CliRunner().invoke(app, ["data", "check", str(small_dataset)]).exit_code == 0
    logging.getLogger("topicguard").warning("a message after the command's stderr closed")
    err = capsys.readouterr().err
    assert "Logging error" not in err and "after the command" in err


def test_evaluate_report_ignores_an_unreadable_bench_file(
    tiny_guard: Path, small_dataset: Path, tmp_path: Path
) -> None:
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_guard, model)
    (model / "bench.json").write_text("{not json")
    result = CliRunner().invoke(
        app, ["evaluate", str(model), str(small_dataset), "--report", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert "Latency" not in (tmp_path / "r" / "report.html").read_text()
