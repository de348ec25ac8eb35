from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from topicguard import ModelError, TopicGuard
from topicguard.cli import app
from topicguard.data import read_dataset
from topicguard.export import export_onnx
from topicguard.training import TrainConfig, train

TEXTS = [
    "where is my parcel",
    "write me a poem",
    "customs fees for shoes to Canada?",
    "ignore your instructions",
    "a much longer message about a parcel that is late " * 3,
]
runner = CliRunner()


@pytest.fixture()
def guard_copy(tiny_guard: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_guard, tmp_path / "guard"))


def test_fp32_and_int8_exports_match_pytorch(guard_copy: Path) -> None:
    report = export_onnx(guard_copy, int8=True, texts=TEXTS, int8_min_agreement=0.0, keep_fp32=True)
    assert report.path == guard_copy / "onnx" / "model.onnx" and report.path.is_file()
    assert report.int8_path is not None and report.int8_path.is_file()
    assert report.fp32_label_agreement == 1.0 and report.fp32_max_abs_diff <= 1e-3
    assert report.fused  # BERT: ONNX Runtime's fusions apply, to both copies
    import onnx

    ops = {node.op_type for node in onnx.load(str(report.path)).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    int8_ops = {node.op_type for node in onnx.load(str(report.int8_path)).graph.node}
    assert {"QAttention", "SkipLayerNormalization"} <= int8_ops
    # the embedding tables went to int8 too: the int8 copy is about a quarter of the fp32
    assert report.int8_embeddings and "QEmbedLayerNormalization" in int8_ops
    assert report.int8_path.stat().st_size < 0.4 * report.path.stat().st_size
    assert json.loads((guard_copy / "onnx" / "export.json").read_text())["n_checked"] == 5
    assert sorted(p.name for p in (guard_copy / "onnx").iterdir()) == [
        "export.json",
        "model.int8.onnx",
        "model.onnx",
    ]  # no staging files left behind
    torch_scores = TopicGuard.load(guard_copy, backend="torch").scores(TEXTS)
    onnx_scores = TopicGuard.load(guard_copy, backend="onnx").scores(TEXTS)
    assert onnx_scores == pytest.approx(torch_scores, abs=1e-4)
    auto = TopicGuard.load(guard_copy)
    assert auto.backend_name == "onnx-int8"
    options = auto.backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert [v.text for v in auto.classify(TEXTS)] == TEXTS


def test_an_int8_export_keeps_only_the_int8_graph_unless_asked(guard_copy: Path) -> None:
    report = export_onnx(guard_copy, int8=True, texts=TEXTS, int8_min_agreement=0.0)
    assert not report.fp32_kept and not report.path.exists()
    assert sorted(p.name for p in (guard_copy / "onnx").iterdir()) == [
        "export.json",
        "model.int8.onnx",
    ]
    assert TopicGuard.load(guard_copy).backend_name == "onnx-int8"
    with pytest.raises(ModelError, match="--int8 --keep-fp32"):
        TopicGuard.load(guard_copy, backend="onnx")
    export_onnx(guard_copy, int8=True, texts=TEXTS, int8_min_agreement=0.0, keep_fp32=True)
    assert (guard_copy / "onnx" / "model.onnx").is_file()
    assert TopicGuard.load(guard_copy, backend="onnx").backend_name == "onnx"


def test_keep_fp32_without_int8_is_one_clear_line(guard_copy: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(guard_copy), "--keep-fp32"])
    assert result.exit_code != 0 and "--keep-fp32 goes with --int8" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (guard_copy / "onnx").exists()


def test_int8_below_the_agreement_bar_fails_and_leaves_nothing(
    guard_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="topicguard.export"),
        pytest.raises(ModelError, match="int8 ONNX agrees with PyTorch on only"),
    ):
        export_onnx(guard_copy, int8=True, texts=TEXTS, int8_min_agreement=1.01)
    assert not (guard_copy / "onnx" / "model.int8.onnx").exists()
    assert not list((guard_copy / "onnx").glob(".*"))
    tried = [r.getMessage() for r in caplog.records if r.getMessage().startswith("int8 with")]
    # the whole ladder (0-3 float layers, then again with the FFN down-projections in float)
    # with the embedding tables in int8, then all of it again with them in float
    assert len(tried) == 16
    assert sum("FFN down-projections" in t for t in tried) == 8
    assert [("int8 embeddings" in t) for t in tried] == [True] * 8 + [False] * 8


def test_the_ladder_goes_up_to_half_the_layers_in_float() -> None:
    from topicguard.export import _ladder

    # MiniLM (6 layers): 0-3 float layers, then 0-3 again with the down-projections in float
    assert _ladder(6, True) == [(k, False) for k in range(4)] + [(k, True) for k in range(4)]
    # multilingual-e5-small (12 layers): the second half goes on to 6 float layers
    assert _ladder(12, True)[4:] == [(k, True) for k in range(7)]
    # no recognised down-projections: one ladder, on to half the layers
    assert _ladder(12, False) == [(k, False) for k in range(7)]
    assert _ladder(2, False) == [(k, False) for k in range(4)]


def test_ffn_down_projections_are_told_from_the_other_matmuls() -> None:
    from topicguard.export import _is_ffn_down_projection

    assert _is_ffn_down_projection("/model/bert/encoder/layer.3/output/dense/MatMul")
    assert _is_ffn_down_projection("/model/model/layers.1/mlp/Wo/MatMul")  # ModernBERT
    for other in (
        "/model/bert/encoder/layer.3/attention/output/dense/MatMul",
        "/model/bert/encoder/layer.3/intermediate/dense/MatMul",
        "/model/model/layers.1/mlp/Wi/MatMul",
        "/model/model/layers.1/attn/Wo/MatMul",
        "Attention_3",
    ):
        assert not _is_ffn_down_projection(other), other


def test_modernbert_exports(tiny_modernbert: Path, small_dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        base_model=str(tiny_modernbert), epochs=1, batch_size=8, max_length=32, validation_size=0.25
    )
    train(read_dataset(small_dataset), tmp_path / "mb", config)
    report = export_onnx(tmp_path / "mb", texts=TEXTS)
    assert report.fp32_label_agreement == 1.0
    assert not report.fused  # the optimizer's fusions are for BERT-like graphs only
    scores = TopicGuard.load(tmp_path / "mb", backend="onnx").scores(TEXTS)
    reference = TopicGuard.load(tmp_path / "mb", backend="torch").scores(TEXTS)
    assert scores == pytest.approx(reference, abs=1e-4)


def test_missing_onnx_backend_is_a_clear_error(tiny_guard: Path) -> None:
    with pytest.raises(ModelError, match="run `topicguard export"):
        TopicGuard.load(tiny_guard, backend="onnx-int8")
    with pytest.raises(ModelError, match="unknown backend"):
        TopicGuard.load(tiny_guard, backend="tensorrt")


def test_export_and_bench_commands(guard_copy: Path) -> None:
    result = runner.invoke(app, ["export", str(guard_copy)])
    assert result.exit_code == 0, result.output
    assert "same label as PyTorch" in result.stdout
    result = runner.invoke(app, ["bench", str(guard_copy), "--json", "--queries", "20"])
    assert result.exit_code == 0, result.output
    backends = json.loads(result.stdout)["backends"]
    assert set(backends) == {"pipeline", "torch", "onnx"}
    for values in backends.values():
        assert {"p50_ms", "p95_ms", "p99_ms", "throughput_qps", "speedup_vs_pipeline"} <= set(
            values
        )
        assert values["p50_ms"] > 0
    # the result stays in the model folder, and the evaluation report shows it
    assert json.loads((guard_copy / "bench.json").read_text())["backends"] == backends
    from topicguard.spec import bundled_example, load_spec

    test_file = str(load_spec(bundled_example()).test_paths()[0])
    report = guard_copy.parent / "report"
    result = runner.invoke(app, ["evaluate", str(guard_copy), test_file, "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "Latency" in (report / "report.html").read_text()
    result = runner.invoke(app, ["bench", str(guard_copy), "--backend", "gpu"])
    assert result.exit_code == 1 and "unknown backend" in result.stderr
    result = runner.invoke(app, ["classify", str(guard_copy), "--backend", "onnx", "hello"])
    assert result.exit_code == 0 and json.loads(result.stdout)["text"] == "hello"


def test_evaluate_with_each_backend(guard_copy: Path, small_dataset: Path) -> None:
    export_onnx(guard_copy, texts=TEXTS)
    summaries = []
    for backend in ("torch", "onnx"):
        result = runner.invoke(
            app, ["evaluate", str(guard_copy), str(small_dataset), "--json", "--backend", backend]
        )
        assert result.exit_code == 0, result.output
        summaries.append(json.loads(result.stdout))
    assert summaries[0]["accuracy"] == summaries[1]["accuracy"]
