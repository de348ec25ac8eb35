"""The public API, pinned: a name that disappears or appears here is a decision, not an
accident. Each module's ``__all__`` is sorted and every name in it exists."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "topicguard": [
        "DataError",
        "LLMError",
        "LLMRequestError",
        "MissingDependencyError",
        "ModelError",
        "SpecError",
        "TopicGuard",
        "TopicGuardError",
        "Verdict",
        "__version__",
    ],
    "topicguard.runtime": [
        "BACKENDS",
        "Backend",
        "Judgement",
        "OnnxBackend",
        "TopicGuard",
        "TorchBackend",
        "Verdict",
    ],
    "topicguard.verdict": ["Verdict"],
    "topicguard.folder": [
        "BENCH_FILE",
        "FORMAT_VERSION",
        "GuardMetadata",
        "METADATA_FILE",
        "MULTILINGUAL_DIR",
        "Routing",
        "multilingual_path",
        "onnx_file",
        "read_bench",
        "write_bench",
    ],
    "topicguard.training": [
        "PRESETS",
        "TrainConfig",
        "TrainResult",
        "data_fingerprint",
        "default_out_dir",
        "field_help",
        "resolve_precision",
        "train",
        "train_guard",
        "train_multilingual",
        "train_spec",
    ],
    "topicguard.calibrate": [
        "Calibration",
        "Objective",
        "calibrate",
        "choose_threshold",
        "fit_calibration",
        "fit_temperature",
        "sigmoid",
    ],
    "topicguard.metrics": [
        "HEADLINE_METRICS",
        "accuracy_threshold",
        "calibration_error",
        "compute_metrics",
        "reliability_bins",
        "sigmoid",
    ],
    "topicguard.data": [
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
    ],
    "topicguard.evaluate": [
        "ConversationEvaluation",
        "Evaluation",
        "evaluate",
        "evaluate_conversations",
    ],
    "topicguard.export": ["ExportReport", "check_texts", "export_guard", "export_onnx"],
    "topicguard.serve": ["ServeConfig", "create_app"],
    "topicguard.proxy": ["ProxyConfig", "create_proxy_app", "guard_spec", "run", "upstream_base"],
    "topicguard.review": [
        "JudgeAnswer",
        "ReviewSummary",
        "build_messages",
        "parse_verdict",
        "review_rows",
    ],
    "topicguard.spec": [
        "GenerationSettings",
        "GuardSpec",
        "LLMEndpoint",
        "LabelNames",
        "bundled_example",
        "load_spec",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_pinned(module: str) -> None:
    imported = importlib.import_module(module)
    names = list(imported.__all__)
    assert names == sorted(names)
    assert sorted(names) == sorted(PUBLIC[module])
    for name in names:
        assert getattr(imported, name) is not None


def test_there_is_one_verdict() -> None:
    """``Verdict`` is the guard's decision; the LLM judge's answer has its own name."""
    import topicguard.runtime
    from topicguard import Verdict
    from topicguard.review import JudgeAnswer

    assert Verdict.__module__ == "topicguard.verdict"
    assert topicguard.runtime.Verdict is Verdict
    assert JudgeAnswer.__name__ != Verdict.__name__


def test_backends_follow_the_protocol() -> None:
    from topicguard.runtime import Backend, OnnxBackend, TorchBackend

    for backend in (OnnxBackend, TorchBackend):
        assert callable(backend.logits)
    assert set(Backend.__annotations__) == {"name", "tokenizer", "max_length"}
