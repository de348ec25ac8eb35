from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from topicguard import DataError, ModelError, TopicGuard, Verdict
from topicguard.data import read_dataset
from topicguard.training import TrainConfig, train

from conftest import write_rows


def test_model_folder_is_a_plain_hugging_face_folder_plus_metadata(tiny_guard: Path) -> None:
    names = {p.name for p in tiny_guard.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "topicguard.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    config = json.loads((tiny_guard / "config.json").read_text())
    assert config["id2label"] == {"0": "False", "1": "True"}
    meta = json.loads((tiny_guard / "topicguard.json").read_text())
    assert 0 < meta["threshold"] < 1
    assert meta["spec"]["company"] == "Spellbots Logistics"
    assert len(meta["data"]["fingerprint"]) == 64
    assert meta["data"]["n_train"] + meta["data"]["n_validation"] == 16
    assert set(meta["metrics"]["validation"]) >= {"f1", "false_block_rate", "leak_rate"}
    # a soup of two: two runs of two epochs, then the mean of epochs 1-2 of both
    assert [(h.get("run"), h["epoch"]) for h in meta["history"]] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
        (None, 2),
    ]
    assert meta["history"][-1]["averaged_epochs"] == 2 and meta["runs"] == 2
    assert meta["averaged_epochs"] in ([], [1, 2])
    assert not list(tiny_guard.parent.glob(".*tmp"))  # no half-written folder left behind


def test_reference_pipeline_snippet_works_on_the_folder(tiny_guard: Path) -> None:
    from transformers import pipeline

    result = pipeline("text-classification", model=str(tiny_guard))("Where is my package?")
    assert result[0]["label"] in ("True", "False")
    assert 0 <= result[0]["score"] <= 1


def test_runtime_classifies_with_the_stored_threshold(tiny_guard: Path) -> None:
    guard = TopicGuard.load(tiny_guard)
    texts = ["Where is my parcel?", "write me a poem", "a much longer message " * 20]
    verdicts = guard.classify(texts)
    assert [v.text for v in verdicts] == texts
    for verdict in verdicts:
        assert isinstance(verdict, Verdict)
        assert verdict.allowed == (verdict.score >= guard.threshold)
        assert verdict.label == ("True" if verdict.allowed else "False")
    # batching sorts by length internally; results must not depend on batch composition
    alone = [guard.classify(t)[0].score for t in texts]
    assert alone == pytest.approx([v.score for v in verdicts], abs=1e-5)


def test_runtime_rejects_empty_text_and_non_models(tiny_guard: Path, tmp_path: Path) -> None:
    guard = TopicGuard.load(tiny_guard)
    with pytest.raises(DataError, match="text 2 is empty"):
        guard.classify(["fine", "   "])
    with pytest.raises(ModelError, match="not a topicguard model"):
        TopicGuard.load(tmp_path)
    with pytest.raises(ModelError, match="model folder not found"):
        TopicGuard.load(tmp_path / "missing")


def test_training_refuses_to_overwrite_and_one_class_data(
    tiny_guard: Path, tiny_bert: Path, small_dataset: Path, tmp_path: Path
) -> None:
    examples = read_dataset(small_dataset)
    config = TrainConfig(base_model=str(tiny_bert), epochs=1, validation_size=0.25)
    before = (tiny_guard / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(ModelError, match="--overwrite"):
        train(examples, tiny_guard, config)
    assert (tiny_guard / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(DataError, match="only one class"):
        train([e for e in examples if e.label], tmp_path / "m", config)
    with pytest.raises(DataError, match="epochs must be at least 1"):
        train(examples, tmp_path / "m", TrainConfig(base_model=str(tiny_bert), epochs=0))
    with pytest.raises(DataError, match="multilingual repeat must be at least 1"):
        train(
            examples, tmp_path / "m", TrainConfig(base_model=str(tiny_bert), multilingual_repeat=0)
        )
    assert not (tmp_path / "m").exists()


def test_mean_weights_average_floats_and_keep_the_rest() -> None:
    import torch

    from topicguard.training.averaging import add_weights, mean_weights

    first = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1])}
    second = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([5, 5])}
    total = add_weights(add_weights({}, first), second)
    assert first["w"].tolist() == [1.0, 2.0]  # the sum never aliases a model's own tensors
    mean = mean_weights(total, 2, second)
    assert mean["w"].tolist() == [2.0, 4.0]
    assert mean["ids"].tolist() == [5, 5]  # integer buffers are not averaged


def test_averaged_weights_are_kept_only_when_validation_agrees(
    tiny_bert: Path, small_dataset: Path, tmp_path: Path
) -> None:
    examples = read_dataset(small_dataset)
    common = dict(base_model=str(tiny_bert), epochs=3, batch_size=4, max_length=32, soup=1)
    single = train(examples, tmp_path / "single", TrainConfig(**common, average_last=1))
    assert single.averaged_epochs == [] and single.kept == f"epoch {single.best_epoch}"
    result = train(examples, tmp_path / "mean", TrainConfig(**common, average_last=2))
    meta = json.loads((tmp_path / "mean" / "topicguard.json").read_text())
    epochs = [h["validation_accuracy"] for h in meta["history"][:-1]]
    averaged = meta["history"][-1]
    assert averaged["averaged_epochs"] == 2 and len(epochs) == 3
    # kept unless the best single epoch beats it on validation by over one standard error
    best, n = max(epochs), meta["data"]["n_validation"]
    keeps_mean = averaged["validation_accuracy"] >= best - math.sqrt(best * (1 - best) / n)
    assert result.averaged_epochs == meta["averaged_epochs"] == ([2, 3] if keeps_mean else [])
    assert result.kept == ("the mean of epochs 2-3" if keeps_mean else f"epoch {result.best_epoch}")
    with pytest.raises(DataError, match="average-last"):
        TrainConfig(average_last=0).validate()


def test_a_soup_averages_runs_that_differ_only_in_order(
    tiny_bert: Path, small_dataset: Path, tmp_path: Path
) -> None:
    examples = read_dataset(small_dataset)
    config = TrainConfig(
        base_model=str(tiny_bert), epochs=2, average_last=2, soup=2, batch_size=4, max_length=32
    )
    result = train(examples, tmp_path / "soup", config)
    meta = json.loads((tmp_path / "soup" / "topicguard.json").read_text())
    runs = [(h["run"], h["epoch"]) for h in meta["history"][:-1]]
    assert runs == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert meta["history"][-1]["runs"] == 2 and meta["runs"] == result.runs == 2
    best = max(h["validation_accuracy"] for h in meta["history"][:-1])
    mean = meta["history"][-1]["validation_accuracy"]
    keeps_mean = mean >= best - math.sqrt(best * (1 - best) / meta["data"]["n_validation"])
    if keeps_mean:
        assert result.kept == "the mean of epochs 1-2 of 2 runs"
    else:
        assert result.kept == f"epoch {result.best_epoch} of run {result.best_run}"
    # the two runs saw the data in different orders, so they ended apart
    assert meta["history"][1]["train_loss"] != meta["history"][3]["train_loss"]
    with pytest.raises(DataError, match="soup"):
        TrainConfig(soup=0).validate()


def test_training_is_seeded(tiny_bert: Path, small_dataset: Path, tmp_path: Path) -> None:
    examples = read_dataset(small_dataset)
    config = TrainConfig(
        base_model=str(tiny_bert), epochs=1, batch_size=4, max_length=32, validation_size=0.25
    )
    scores = []
    for name in ("a", "b"):
        train(examples, tmp_path / name, config)
        scores.append(TopicGuard.load(tmp_path / name).scores(["where is my parcel"])[0])
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)


def test_overwrite_replaces_atomically(
    tiny_bert: Path, small_dataset: Path, tmp_path: Path
) -> None:
    examples = read_dataset(small_dataset)
    config = TrainConfig(
        base_model=str(tiny_bert), epochs=1, batch_size=8, max_length=32, validation_size=0.25
    )
    out = tmp_path / "guard"
    train(examples, out, config)
    (out / "stale.txt").write_text("from the previous model")
    train(examples, out, config, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guard"]


def test_modernbert_architecture_trains_and_loads(
    tiny_modernbert: Path, small_dataset: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        base_model=str(tiny_modernbert), epochs=1, batch_size=8, max_length=32, validation_size=0.25
    )
    train(read_dataset(small_dataset), tmp_path / "mb", config)
    assert json.loads((tmp_path / "mb" / "config.json").read_text())["model_type"] == "modernbert"
    verdicts = TopicGuard.load(tmp_path / "mb").classify(["Where is my parcel?"])
    assert verdicts[0].label in ("True", "False")


def test_unknown_base_model_is_a_clear_error(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    examples = read_dataset(small_dataset)
    with pytest.raises(ModelError, match="cannot load model 'no-such-org/no-such-model'"):
        train(examples, tmp_path / "m", TrainConfig(base_model="no-such-org/no-such-model"))
    with pytest.raises(ModelError, match="model folder not found"):
        train(examples, tmp_path / "m", TrainConfig(base_model=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="config.json"):
        train(examples, tmp_path / "m", TrainConfig(base_model=str(empty)))


def test_validation_set_can_be_given(
    tiny_bert: Path, tmp_path: Path, small_rows: list[dict]
) -> None:
    path = write_rows(tmp_path / "d.jsonl", small_rows)
    examples = read_dataset(path)
    result = train(
        examples[2:-2],
        tmp_path / "m",
        TrainConfig(base_model=str(tiny_bert), epochs=1, max_length=32),
        validation=examples[:2] + examples[-2:],
    )
    assert (result.n_train, result.n_validation) == (12, 4)


def test_long_texts_are_judged_window_by_window(tiny_guard: Path) -> None:
    guard = TopicGuard.load(tiny_guard)  # max_length 32 tokens: windows of 30
    long_text = " ".join(f"word{i}" for i in range(200))
    pieces, owners = guard._windows(["short text", long_text])
    assert pieces[0] == "short text" and owners.count(0) == 1
    windows = [p for p, o in zip(pieces, owners, strict=True) if o == 1]
    assert len(windows) > 3
    assert windows[0].startswith("word0") and windows[-1].endswith("word199")
    for first, second in zip(windows, windows[1:], strict=False):
        assert first[len(first) // 2 :].split()[-1] in second  # half-overlapping
    # the text's score is that of its least on-topic window
    window_scores = guard.scores(windows)
    assert guard.scores([long_text])[0] == pytest.approx(window_scores.min(), abs=1e-6)
    # the window that decided, as the web page shows it: the least on-topic one
    start, end, count = guard.deciding_window(long_text) or (0, 0, 0)
    assert count == len(windows)
    assert long_text[start:end] == windows[int(window_scores.argmin())]
    assert guard.deciding_window("short text") is None


def test_frozen_embeddings_stay_fixed_and_the_rest_trains(
    tiny_bert: Path, small_dataset: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    examples = read_dataset(small_dataset)

    def weight(tensors: dict, suffix: str) -> Any:
        return next(v for k, v in tensors.items() if k.endswith(suffix))

    base = load_file(str(tiny_bert / "model.safetensors"))
    embeddings, query = "word_embeddings.weight", "layer.0.attention.self.query.weight"
    changed = {}
    for freeze in (True, None):  # None: this vocabulary is small, so it trains
        out = tmp_path / f"freeze-{freeze}"
        config = TrainConfig(
            base_model=str(tiny_bert),
            epochs=1,
            batch_size=4,
            max_length=32,
            validation_size=0.25,
            freeze_embeddings=freeze,
        )
        train(examples, out, config)
        tuned = load_file(str(out / "model.safetensors"))
        changed[freeze] = (
            bool((weight(tuned, embeddings) != weight(base, embeddings)).any()),
            bool((weight(tuned, query) != weight(base, query)).any()),
            json.loads((out / "topicguard.json").read_text())["training"]["freeze_embeddings"],
        )
    assert changed[True] == (False, True, True)
    assert changed[None] == (True, True, False)


def test_bf16_training_saves_a_plain_fp32_folder(
    tiny_bert: Path, small_dataset: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    examples = read_dataset(small_dataset)
    out = tmp_path / "bf16"
    config = TrainConfig(
        base_model=str(tiny_bert),
        epochs=1,
        batch_size=4,
        max_length=32,
        validation_size=0.25,
        precision="bf16",
    )
    train(examples, out, config)
    metadata = json.loads((out / "topicguard.json").read_text())
    assert metadata["training"]["precision"] == "bf16"
    tensors = load_file(str(out / "model.safetensors"))
    assert {str(t.dtype) for t in tensors.values()} == {"float32"}
    # the fast attention used while training is not pinned in the folder
    assert json.loads((out / "config.json").read_text()).get("attn_implementation") != "eager"
    loaded = TopicGuard.load(out)
    assert loaded.model.config._attn_implementation != "eager"
    assert 0.0 <= loaded.scores(["where is my parcel"])[0] <= 1.0


def test_precision_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from topicguard.training import resolve_precision

    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision("auto") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto") == "bf16"
    with pytest.raises(DataError, match="precision must be one of auto, bf16, fp32"):
        TrainConfig(precision="fp16").validate()
