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
    import base64

    from topicguard.report import PLOTS

    evaluation = evaluate(TopicGuard.load(tiny_guard), read_dataset(small_dataset))
    bench = {
        "n_single": 300,
        "batch_size": 64,
        "threads": 2,
        "backends": {
            "pipeline": {"p50_ms": 6.0, "p95_ms": 7.0, "p99_ms": 8.0, "throughput_qps": 500.0},
            "onnx-int8": {
                "p50_ms": 1.25,
                "p95_ms": 1.5,
                "p99_ms": 2.0,
                "throughput_qps": 900.0,
                "speedup_vs_pipeline": 4.8,
            },
        },
    }
    written = write_report(evaluation, tmp_path / "report", bench=bench)
    names = {p.name for p in written}
    assert names == {"metrics.json", "errors.csv", "report.md", "report.html", *PLOTS}
    assert {"roc_curve.png", "reliability.png", "precision_recall.png"} <= set(PLOTS)
    for path in written:
        assert path.stat().st_size > 0
    page = (tmp_path / "report" / "report.html").read_text()
    markdown = (tmp_path / "report" / "report.md").read_text()
    for png in PLOTS:
        image = (tmp_path / "report" / png).read_bytes()
        assert image[:4] == b"\x89PNG"
        assert f"]({png})" in markdown
        # self-contained: the page embeds each image rather than linking to it
        assert base64.b64encode(image).decode("ascii") in page
        assert f"data-file='{png}'" in page
    for heading in ("Worst false blocks", "Worst leaks", "Per category", "Latency"):
        assert heading in page and heading in markdown
    assert "1.25" in page and "4.8x" in page  # the bench figures
    assert "<script" not in page
    with (tmp_path / "report" / "errors.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(evaluation.errors())
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n"] == 16


def test_report_escapes_hostile_text(tiny_guard: Path, tmp_path: Path) -> None:
    from topicguard.data import Example

    rows = [
        Example(text="<script>alert(1)</script> where is my parcel", label=True),
        Example(text="<img src=x onerror=alert(1)> write a poem", label=False),
    ]
    evaluation = evaluate(TopicGuard.load(tiny_guard), rows)
    evaluation.threshold, evaluation.thresholds = 2.0, None  # all blocked: a false block shown
    write_report(evaluation, tmp_path / "r")
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
