"""Results generated, not typed: the benchmarks' shared module, the records they leave in
results/*.json, and `make results` (benchmarks/results.py) rendering every table of
docs/results.md and the README's from a tiny guard's measurements."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from benchmark_scripts import BENCHMARKS
from benchmark_scripts import load_benchmark as _load

from conftest import REFERENCE_DIR

ROOT = BENCHMARKS.parent


def test_sample_spreads_at_most_limit_rows_over_the_whole_list() -> None:
    common = _load("_common")
    rows = list(range(10))
    assert common.sample(rows, None) == rows
    assert common.sample(rows, 20) == rows
    assert common.sample(rows, 5) == [0, 2, 4, 6, 8]
    assert common.sample(rows, 0) == []


def test_english_keeps_rows_in_english_or_without_a_language() -> None:
    rows = [SimpleNamespace(lang=lang, text=str(i)) for i, lang in enumerate(["en", None, "zh"])]
    assert [row.text for row in _load("_common").english(rows)] == ["0", "1"]


def test_bundled_rows_come_from_the_example_spec() -> None:
    common = _load("_common")
    test = common.bundled("test")
    english = common.bundled("test", english_only=True)
    assert 0 < len(english) < len(test)
    assert {row.lang for row in english} <= {None, "en"}


def test_reference_file_reads_the_setting_and_says_how_to_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = _load("_common")
    monkeypatch.delenv("TOPICGUARD_REFERENCE_DATA", raising=False)
    with pytest.raises(common.MissingReference, match="TOPICGUARD_REFERENCE_DATA is not set"):
        common.reference_file()
    monkeypatch.setenv("TOPICGUARD_REFERENCE_DATA", str(tmp_path))
    with pytest.raises(common.MissingReference, match="neither rev_guardrail_r1.xlsx nor"):
        common.reference_file()
    (tmp_path / "rev_guardrail_r1.xlsx").write_bytes(b"")
    assert common.reference_file() == tmp_path / "rev_guardrail_r1.xlsx"
    with pytest.raises(common.MissingReference, match="--reference FILE"):
        common.reference_file(tmp_path / "elsewhere")


def test_parser_takes_the_training_defaults_from_the_config() -> None:
    from topicguard.training import TrainConfig

    parser = _load("_common").parser("A benchmark.\n\nMore.", "model", "base-model", "limit")
    args = parser.parse_args(["runs/x", "--json"])
    assert args.model == Path("runs/x") and args.json and args.limit is None
    assert args.base_model == TrainConfig().base_model
    assert parser.description == "A benchmark."
    with pytest.raises(ValueError, match="unknown benchmark options"):
        _load("_common").parser(None, "modle")


def test_a_result_records_command_date_and_machine(tmp_path: Path) -> None:
    common = _load("_common")
    path = tmp_path / "results" / "x.json"
    common.write_result(path, "python benchmarks/x.py --json", {"f1": 0.5})
    record = json.loads(path.read_text())
    assert record["command"] == "python benchmarks/x.py --json"
    assert record["date"] == datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert record["cpus"] == os.cpu_count() == record["machine"]["cpus"]
    assert record["machine"]["python"] and record["result"] == {"f1": 0.5}
    common.write_result(path, "python benchmarks/x.py --json", skipped="no reference data")
    assert json.loads(path.read_text())["skipped"] == "no reference data"


def test_render_reads_older_records_and_says_why_a_table_is_missing(tmp_path: Path) -> None:
    render = _load("render")
    legacy = {"date": "2026-12-01", "cpus": 2, "evaluations": []}
    (tmp_path / "shipped.json").write_text(json.dumps(legacy))
    record = render.read_record(tmp_path / "shipped.json")
    assert record["result"] == legacy and record["date"] == "2026-12-01"
    _load("_common").write_result(tmp_path / "compare.json", "compare.py --json", skipped="why")
    assert render.render_block("compare", tmp_path).startswith("Not measured: why (`compare")
    assert "`make results` writes `" in render.render_block("bench", tmp_path)


def test_committed_documents_are_rendered_from_the_committed_results() -> None:
    assert _load("render").main(["--check"]) == 0


def _blocks(text: str) -> dict[str, str]:
    pattern = r"<!-- results:([\w-]+) -->\n(.*?)<!-- /results:\1 -->"
    return dict(re.findall(pattern, text, re.S))


@pytest.mark.slow
def test_make_results_renders_every_table_from_a_tiny_guard(
    tiny_guard: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make results`' script on a tiny guard and a sample of each dataset, into a temporary
    results folder and documents: every block of docs/results.md holds a table whose
    numbers are the JSON's (or, without the reference data, says it was skipped)."""
    has_reference = (REFERENCE_DIR / "rev_guardrail_r1.xlsx").is_file()
    monkeypatch.setenv("TOPICGUARD_REFERENCE_DATA", str(REFERENCE_DIR))
    results, docs, readme = tmp_path / "results", tmp_path / "docs", tmp_path / "README.md"
    results.mkdir()
    shutil.copy(ROOT / "results" / "train_speed.json", results)  # not in `make results`
    args = ["--model", str(tiny_guard), "--results", str(results), "--docs", str(docs)]
    args += ["--readme", str(readme), "--base-model", str(tiny_bert), "--epochs", "1"]
    args += ["--limit", "120", "--queries", "10", "--clients", "2", "--seconds", "1"]
    args += ["--requests", "3"]
    assert _load("results").main(args) == 0

    records = {path.stem: json.loads(path.read_text()) for path in results.glob("*.json")}
    trained = {"reference", "reference_clustered", "cross_dataset", "compare"}
    measured = {"shipped", "conversations", "bench", "load", "proxy", "scaling"}
    assert set(records) >= measured | trained
    for name, record in records.items():
        if name == "train_speed":
            continue
        assert {"command", "date", "cpus", "machine"} <= set(record), name
        assert ("result" in record) is (has_reference or name not in trained), name

    document = (docs / "results.md").read_text()
    blocks = _blocks(document)
    template = _blocks((ROOT / "docs" / "results.md").read_text())
    assert set(blocks) == set(template)
    for name, body in blocks.items():
        if name == "averaging":  # `make results-training`'s, not run here
            assert body.startswith("Not measured yet: `make results-training` writes"), body
        elif name in trained and not has_reference:
            assert body.startswith("Not measured: no reference data"), name
        else:
            assert "| --- |" in body and "Measured" in body, name
    r = {name: record.get("result") for name, record in records.items()}
    test = r["shipped"]["evaluations"][0]["metrics"]
    assert f"| {test['n']:,} | {test['f1']:.4f} |" in blocks["shipped"]
    assert (
        f"| all | {test['n']:,} | {test['accuracy']:.3f} | {test['f1']:.3f} |"
        in (blocks["languages"])
    )
    assert f"{r['bench']['backends']['torch']['p50_ms']:.2f}" in blocks["bench"]
    assert f"| {r['load']['requests']:,} |" in blocks["load"]
    assert f"{r['proxy']['guard_p50_ms']:.2f} ms" in blocks["proxy"]
    assert f"{r['conversations']['turns']:,} user turns" in blocks["conversations"]
    assert records["bench"]["command"] in blocks["bench"]
    if has_reference:
        assert f"| {r['reference']['f1_weighted']:.3f} |" in blocks["reference"]
        assert f"| {r['reference_clustered']['f1_weighted']:.3f} |" in blocks["reference"]
        direction = r["cross_dataset"]["directions"]["bundled_to_reference"]
        assert f"| {direction['f1']:.3f} |" in blocks["cross_dataset"]
        assert f"| {r['compare']['reference']['tfidf_logreg']['f1']:.3f} |" in blocks["compare"]

    scaling = _blocks((docs / "scaling.md").read_text())
    assert f"{r['scaling']['workers_2_vs_1']:.2f}x the requests" in scaling["scaling"]
    if "result" in records["batch_score"]:  # skipped without the `ray` extra
        assert f"{r['batch_score']['ray_vs_local']:.2f}x" in scaling["batch_score"]
        assert r["batch_score"]["same_verdicts"] is True

    capacity = _blocks(readme.read_text())["capacity"]
    assert f"({r['scaling']['workers_2_vs_1']:.2f}x the single process)" in capacity

    summary = _blocks(readme.read_text())["summary"]
    assert f"`{tiny_guard}`" in summary.replace(str(ROOT) + "/", "")
    assert f"{test['accuracy']:.3f} / {test['f1']:.3f}" in summary
    assert "`transformers.pipeline`" in summary and "training wall time" in summary
    # the checkout's own documents are untouched
    assert _load("render").main(["--check"]) == 0
