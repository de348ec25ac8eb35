"""Batch scoring of partitions with the local engine (no Ray): ``classify --input DIR_OR_GLOB
--output DIR``, and its bad input: one clear line, nothing half-written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from topicguard import TopicGuard
from topicguard.cli import app

runner = CliRunner()
TEXTS = ["where is my parcel", "write me a poem", "refund for a lost parcel", "tell me a joke"]


def partitions(folder: Path) -> Path:
    """Three partitions, one per format, with a blank text and an extra column."""
    folder.mkdir()
    rows = [{"text": t, "id": i} for i, t in enumerate(TEXTS)]
    (folder / "a.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*rows[:2], {"text": "  ", "id": 9}]),
        encoding="utf-8",
    )
    pd.DataFrame(rows[2:3]).to_csv(folder / "b.csv", index=False)
    pd.DataFrame(rows[3:]).to_parquet(folder / "c.parquet", index=False)
    return folder


def read_output(folder: Path) -> pd.DataFrame:
    frames = [
        pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p, lines=True)
        for p in sorted(folder.iterdir())
    ]
    return pd.concat(frames).sort_values("text").reset_index(drop=True)


def expected(guard_dir: Path) -> pd.DataFrame:
    guard = TopicGuard.load(guard_dir)
    rows = [v.to_dict() for v in guard.classify(TEXTS)]
    return pd.DataFrame(rows).sort_values("text").reset_index(drop=True)


@pytest.mark.parametrize("output_format", ["parquet", "jsonl"])
def test_local_engine_writes_classify_rows_per_partition(
    tiny_guard: Path, tmp_path: Path, output_format: str
) -> None:
    source, out = partitions(tmp_path / "in"), tmp_path / "out"
    args = ["classify", str(tiny_guard), "--input", str(source), "--output", str(out)]
    result = runner.invoke(app, [*args, "--output-format", output_format])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"part-0000{i}.{output_format}" for i in range(3)]
    got, want = read_output(out), expected(tiny_guard)
    assert list(got.columns) == list(want.columns)  # classify's columns, blank text skipped
    assert got[["text", "label", "allowed"]].equals(want[["text", "label", "allowed"]])
    assert got["score"].tolist() == pytest.approx(want["score"].tolist(), abs=1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_glob_picks_its_partitions(tiny_guard: Path, tmp_path: Path) -> None:
    source, out = partitions(tmp_path / "in"), tmp_path / "out"
    args = ["classify", str(tiny_guard), "--input", str(source / "*.jsonl"), "--output", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(read_output(out)["text"]) == sorted(TEXTS[:2])


def _bad_partition(folder: Path, kind: str) -> str:
    folder.mkdir()
    if kind == "no match":
        return str(folder / "*.jsonl")
    if kind == "no text column":
        (folder / "a.jsonl").write_text('{"message": "hi"}\n', encoding="utf-8")
    elif kind == "unreadable":
        (folder / "a.jsonl").write_text('{"text": "hi"}\n', encoding="utf-8")
        (folder / "b.jsonl").write_text('{"text": "hi"\n', encoding="utf-8")
    elif kind == "not a partition":
        (folder / "a.xlsx").write_text("x", encoding="utf-8")
        return str(folder / "a.*")
    return str(folder)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no match", "matches no file"),
        ("no text column", "no 'text' column"),
        ("unreadable", "invalid JSON"),
        ("not a partition", "not a partition format"),
    ],
)
def test_bad_partitions_are_one_line_and_leave_nothing(
    tiny_guard: Path, tmp_path: Path, kind: str, message: str
) -> None:
    source, out = _bad_partition(tmp_path / "in", kind), tmp_path / "out"
    result = runner.invoke(
        app, ["classify", str(tiny_guard), "--input", source, "--output", str(out)]
    )
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary folder left


def test_engine_ray_without_ray_names_the_extra(
    tiny_guard: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    source, out = partitions(tmp_path / "in"), tmp_path / "out"
    args = ["classify", str(tiny_guard), "--input", str(source), "--output", str(out)]
    result = runner.invoke(app, [*args, "--engine", "ray"])
    assert result.exit_code == 1
    assert "pip install 'topicguard[ray]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--engine", "spark"], "use local or ray"),
        (["--output-format", "csv"], "use parquet or jsonl"),
        (["hello"], "not both"),
    ],
)
def test_bad_options_are_one_line(
    tiny_guard: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    source = partitions(tmp_path / "in")
    args = ["classify", str(tiny_guard), "--input", str(source), "--output", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 1 and message in result.stderr


def test_an_empty_partition_is_an_empty_partition_not_a_failed_job(
    tiny_guard: Path, tmp_path: Path
) -> None:
    """As on Ray: a partition with no text left gives an empty part with classify's columns."""
    source, out = partitions(tmp_path / "in"), tmp_path / "out"
    (source / "d.jsonl").write_text('{"text": "   "}\n', encoding="utf-8")
    args = ["classify", str(tiny_guard), "--input", str(source), "--output", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    empty = pd.read_parquet(out / "part-00003.parquet")
    assert len(empty) == 0
    assert list(empty.columns) == list(expected(tiny_guard).columns)
    assert len(read_output(out)) == len(TEXTS)


def test_the_output_folder_may_not_hold_the_input(tiny_guard: Path, tmp_path: Path) -> None:
    source = partitions(tmp_path / "in")
    before = sorted(p.name for p in source.iterdir())
    for out in (source, tmp_path):
        args = ["classify", str(tiny_guard), "--input", str(source), "--output", str(out)]
        result = runner.invoke(app, [*args, "--overwrite"])
        assert result.exit_code == 1
        assert "holds the input" in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in source.iterdir()) == before  # the input is untouched
