from __future__ import annotations

import csv
import json
from pathlib import Path

from topicguard import TopicGuard
from topicguard.data import read_dataset
from topicguard.evaluate import evaluate
from topicguard.report import write_report


def test_evaluation_matches_the_guard_and_breaks_down_by_category(
    tiny_guard: Path, small_dataset: Path
) -> None:
    guard = TopicGuard.load(tiny_guard)
    examples = read_dataset(small_dataset)
    evaluation = evaluate(guard, examples)
    verdicts = guard.classify([e.text for e in examples])
    assert list(evaluation.predicted) == [v.allowed for v in verdicts]
    errors = evaluation.errors()
    assert len(errors) == sum(v.allowed != e.label for v, e in zip(verdicts, examples, strict=True))
    summary = evaluation.to_dict()
    assert summary["n"] == 16
    assert set(summary["categories"]) == {"support", "other"}
    assert sum(g["errors"] for g in summary["categories"].values()) == len(errors)
    assert summary["categories"]["support"]["on_topic"] == 8
    json.dumps(summary)  # serialisable as the --json contract requires


def test_report_files(tiny_guard: Path, small_dataset: Path, tmp_path: Path) -> None:
    evaluation = evaluate(TopicGuard.load(tiny_guard), read_dataset(small_dataset))
    written = write_report(evaluation, tmp_path / "report")
    names = {p.name for p in written}
    assert names == {
        "metrics.json",
        "errors.csv",
        "report.md",
        "confusion_matrix.png",
        "precision_recall.png",
        "score_histogram.png",
    }
    for path in written:
        assert path.stat().st_size > 0
    for png in ("confusion_matrix.png", "precision_recall.png", "score_histogram.png"):
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in (tmp_path / "report" / "report.md").read_text()
    with (tmp_path / "report" / "errors.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(evaluation.errors())
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n"] == 16
