"""The benchmark scripts run end to end (with a tiny encoder, so quickly) and print JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark as _load

from conftest import REFERENCE_DIR, requires_reference


@pytest.fixture(autouse=True)
def _reference_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmarks find the reference data through its setting, as `make` exports it."""
    if "TOPICGUARD_REFERENCE_DATA" not in os.environ:
        monkeypatch.setenv("TOPICGUARD_REFERENCE_DATA", str(REFERENCE_DIR))


@requires_reference()
@pytest.mark.parametrize("split", ["random", "clustered"])
def test_reference_benchmark_prints_the_contract(
    tiny_bert: Path, split: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _load("reference").main(
        ["--base-model", str(tiny_bert), "--epochs", "1", "--split", split, "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert {
        "f1_weighted",
        "f1",
        "false_block_rate",
        "leak_rate",
        "train_seconds",
        "n_train",
        "n_test",
    } <= set(summary)
    assert summary["n_train"] + summary["n_test"] == 2207
    if split == "random":
        assert (summary["n_train"], summary["n_test"]) == (1765, 442)


@requires_reference()
def test_cross_dataset_benchmark_runs_both_directions(
    tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _load("cross_dataset").main(["--base-model", str(tiny_bert), "--epochs", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    directions = result["directions"]
    assert set(directions) == {"bundled_to_reference", "reference_to_bundled"}
    assert directions["bundled_to_reference"]["n_test"] == 2207
    assert directions["reference_to_bundled"]["n_train"] == 2207
    for values in directions.values():
        assert 0 <= values["false_block_rate"] <= 1 and 0 <= values["leak_rate"] <= 1


def test_load_benchmark_runs_against_a_real_server(
    tiny_guard: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _load("load").main([str(tiny_guard), "--clients", "4", "--seconds", "1"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["errors"] == 0 and result["requests"] > 0
    assert result["p50_ms"] <= result["p99_ms"]


def test_proxy_benchmark_times_both_routes_for_every_case(
    tiny_guard: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model", str(tiny_guard), "--requests", "3", "--delay-ms", "5", "--json"]
    code = _load("proxy").main(args)
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["verdict_mismatches"] == 0 and result["guard_p50_ms"] > 0
    cases = [result[kind][mode] for kind in ("allowed", "blocked") for mode in ("json", "stream")]
    assert any(case is not None for case in cases)
    for case in filter(None, cases):
        assert case["n"] == 3 and case["guard_in_proxy_p50_ms"] > 0
        assert case["direct_p50_ms"] > 0 and case["proxy_p50_ms"] > 0
        assert case["added_p50_ms"] == pytest.approx(case["proxy_p50_ms"] - case["direct_p50_ms"])


@requires_reference()
def test_compare_benchmark_measures_every_method(
    tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _load("compare").main(
        ["--base-model", str(tiny_bert), "--epochs", "1", "--limit", "120", "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"reference", "cross"}
    for task in summary.values():
        assert {
            "tfidf_logreg",
            "embedding_logreg",
            "nearest_example",
            "fine_tuned",
            "fine_tuned_int8",
        } <= set(task)
        for name, row in task.items():
            if name == "_split":
                continue
            assert 0 <= row["f1"] <= 1 and 0 <= row["leak_rate_at_1pct"] <= 1
            assert row["p50_ms"] > 0 and row["train_seconds"] >= 0


@requires_reference()
def test_averaging_benchmark_compares_both_rules_across_seeds(
    tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--base-model", str(tiny_bert), "--limit", "40", "--seeds", "1", "2", "--json"]
    assert _load("averaging").main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"best_epoch", "averaged"}
    for rule in result.values():
        assert len(rule["verdicts_changed_between_seeds"]) == 1
        for seed in ("1", "2"):
            assert set(rule[seed]) == {"kept", "bundled_test", "reference"}
            assert 0 <= rule[seed]["reference"]["false_block_rate"] <= 1
    assert all(result["best_epoch"][s]["kept"].startswith("epoch ") for s in ("1", "2"))


@pytest.mark.slow
def test_train_speed_profiles_a_guard_and_render_writes_its_table(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The training profile end to end (the tiny BERT as the fast model, the real
    multilingual model cut by the fast preset, 120 rows), then rendered into a document."""
    code = _load("train_speed").main(
        ["--presets", "fast", "--base-model", str(tiny_bert), "--limit", "120", "--json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    run = result["runs"]["fast-42"]
    assert set(run["models"]) == {"fast", "multilingual"}
    stages = run["models"]["multilingual"]["stages_seconds"]
    assert {"load", "trim vocabulary", "tokenize", "epoch 1", "calibrate", "save"} <= set(stages)
    assert run["models"]["fast"]["tokens_per_second"] > 0
    assert sum(run["validation_rows"].values()) > 0 and run["folder_mb"] > 0
    assert result["machine_ms"] > 0 and result["cpus"] >= 1

    results = tmp_path / "results"
    results.mkdir()
    (results / "train_speed.json").write_text(json.dumps(result))
    document = (
        "intro\n<!-- results:train_speed -->\nold numbers\n<!-- /results:train_speed -->\nend\n"
    )
    rendered = _load("render").render(document, results=results)
    assert "old numbers" not in rendered and rendered.startswith("intro\n")
    assert "| `--preset fast` (seed 42) |" in rendered and "| trim vocabulary |" in rendered
    assert rendered == _load("render").render(rendered, results=results)  # idempotent


def test_render_refuses_a_block_without_results(tmp_path: Path) -> None:
    document = "<!-- results:nothing -->\n<!-- /results:nothing -->\n"
    with pytest.raises(SystemExit, match="no renderer or no"):
        _load("render").render(document, results=tmp_path)


def test_render_summary_takes_the_first_guard_and_the_first_training_run(tmp_path: Path) -> None:
    """The README's one table: built from results/shipped.json and results/train_speed.json."""
    langs = {"en": {"n": 1000, "errors": 30}, "zh": {"n": 400, "errors": 12}}
    test = {"n": 1400, "accuracy": 0.97, "f1": 0.9712, "languages": langs}
    reference = {"n": 2207, "f1": 0.9891, "false_block_rate": 0.0055, "leak_rate": 0.0212}
    other = {"n": 1400, "accuracy": 0.5, "f1": 0.5, "languages": {}}
    evaluations = [
        {"guard": "runs/a", "data": "bundled test file", "command": "evaluate a test",
         "backend": "onnx-int8", "metrics": test},
        {"guard": "runs/a", "data": "reference data", "command": "evaluate a reference",
         "metrics": reference},
        {"guard": "runs/b", "data": "bundled test file", "command": "evaluate b", "metrics": other},
    ]  # fmt: skip
    run = {"preset": "default", "seed": 42, "minutes": 21.04, "folder_mb": 200.0,
           "folder_mb_exported": 290.4}  # fmt: skip
    results = tmp_path / "results"
    results.mkdir()
    (results / "shipped.json").write_text(
        json.dumps({"date": "2026-12-08", "cpus": 2, "evaluations": evaluations})
    )
    (results / "train_speed.json").write_text(
        json.dumps({"command": "train_speed.py --json", "date": "2026-12-08", "cpus": 2,
                    "runs": {"default-42": run, "default-43": run | {"minutes": 99.0}}})
    )  # fmt: skip
    document = "intro\n<!-- results:summary -->\nstale\n<!-- /results:summary -->\nend\n"
    rendered = _load("render").render(document, results=results)
    assert "stale" not in rendered and rendered.endswith("<!-- /results:summary -->\nend\n")
    assert "| `runs/a` (onnx-int8) |" in rendered
    assert "| bundled test file, 1,400 rows: accuracy / F1 | 0.970 / 0.971 |" in rendered
    assert "errors per language: en / zh | 30 of 1,000 / 12 of 400 |" in rendered
    assert "| 0.989 / 0.55% / 2.12% |" in rendered
    assert "(`--preset default`, seed 42, 2 CPU cores) | 21.0 min |" in rendered
    assert "with ONNX and int8 | 290 MB |" in rendered
    assert "runs/b" not in rendered and "99.0" not in rendered
    assert "Measured on 2026-12-08, 2 CPU cores, by:" in rendered
    assert "train_speed.py --json\nevaluate a test\nevaluate a reference\n```" in rendered
    assert rendered == _load("render").render(rendered, results=results)  # idempotent


def test_render_robustness_and_conversations_tables(tmp_path: Path) -> None:
    check = {
        "target": 0.05,
        "overall": {"counted": 1200, "flip_share": 0.174},
        "by_language": {"en": {"flip_share": 0.1}, "zh": {"flip_share": 0.25}},
    }
    wrapped = {"command": "python benchmarks/robustness.py --json", "date": "2026-12-08", "cpus": 2}
    results = tmp_path / "results"
    results.mkdir()
    robustness = {"attack": check, "greeting_thanks": check, "harmless_words": check}
    (results / "robustness.json").write_text(json.dumps(wrapped | {"result": robustness}))
    turns = {
        "false_block_rate": 0.032,
        "leak_rate": 0.081,
        "languages": {"en": {"false_block_rate": 0.027, "leak_rate": None}},
    }
    conversation = {"conversations": 3, "turns": 9, "context_used": 2}
    conversation |= {"with_context": turns, "without_context": turns}
    (results / "conversations.json").write_text(json.dumps(wrapped | {"result": conversation}))
    document = (
        "<!-- results:robustness -->\nold\n<!-- /results:robustness -->\n"
        "<!-- results:conversations -->\nold\n<!-- /results:conversations -->\n"
    )
    rendered = _load("render").render(document, results=results)
    assert "old" not in rendered
    assert "(1,200) | 17.4% | ≤ 5% | 10.0% / 25.0% / - / - / - |" in rendered
    assert "3 conversations, 9 user turns; context let 2 follow-ups through." in rendered
    assert "| with context | 3.2% | 8.1% | 2.7%, - / - / - / - / - |" in rendered
    assert "by `python benchmarks/robustness.py --json`" in rendered
