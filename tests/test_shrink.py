"""Layer dropping and vocabulary trimming on tiny models, and the training presets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from topicguard import DataError, ModelError
from topicguard.cli import app
from topicguard.shrink import drop_layers, encoder_layers, freeze_lower_layers, trim_vocabulary
from topicguard.training import PRESETS, TrainConfig

# a SentencePiece-style (Unigram) vocabulary: special tokens, Latin and Chinese pieces, and
# pieces of scripts the guard does not serve
PIECES = [
    ("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
    ("▁", -2.0), ("▁where", -3.0), ("▁is", -3.0), ("▁my", -3.0), ("▁parcel", -4.0),
    ("▁par", -5.0), ("cel", -5.5), ("▁pa", -6.0), ("r", -6.0), ("c", -6.0), ("e", -6.0),
    ("l", -6.0), ("p", -6.0), ("a", -6.0), ("w", -6.0), ("h", -6.0), ("i", -6.0), ("s", -6.0),
    ("m", -6.0), ("y", -6.0), ("o", -6.0), ("t", -6.0), ("d", -6.0), ("n", -6.0),
    ("▁paquete", -4.5), ("▁dónde", -4.5), ("▁está", -4.5), ("▁mi", -4.0), ("?", -3.5),
    ("¿", -4.0), ("▁Paket", -4.5), ("▁wo", -4.0), ("▁ist", -4.0), ("▁mein", -4.0),
    ("包裹", -5.0), ("包", -6.5), ("裹", -7.0), ("我的", -5.0), ("我", -6.0), ("的", -6.0),
    ("在哪", -5.5), ("在", -6.5), ("哪", -7.0), ("▁посылка", -4.2), ("▁где", -4.1),
    ("▁paket", -4.3), ("▁anak", -4.4), ("▁ngày", -4.6), ("ấ", -9.0), ("<mask>", 0.0),
]  # fmt: skip


def _unigram_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.Unigram(PIECES, unk_id=3))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=64,
    )


def _tiny_model(vocab_size: int, layers: int = 4) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=1,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def _logits(model: Any, tokenizer: Any, texts: list[str]) -> Any:
    import torch

    with torch.inference_mode():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_trimmed_model_gives_the_same_logits_on_texts_whose_tokens_it_kept(
    tmp_path: Path,
) -> None:
    import copy

    from transformers import pipeline

    tokenizer = _unigram_tokenizer()
    model = _tiny_model(len(PIECES))
    seen = ["where is my parcel", "¿dónde está mi paquete?", "我的包裹在哪"]
    before = _logits(model, tokenizer, seen)
    trimmed_model = copy.deepcopy(model)
    trimmed = trim_vocabulary(
        trimmed_model, tokenizer, texts=seen, languages=["en", "es", "zh"], size=40
    )
    assert len(trimmed) <= 40
    assert trimmed_model.get_input_embeddings().weight.shape[0] == len(trimmed)
    assert trimmed_model.config.vocab_size == len(trimmed)
    # same pieces, other ids, same logits
    for text in seen:
        assert trimmed.tokenize(text) == tokenizer.tokenize(text)
    assert (_logits(trimmed_model, trimmed, seen) - before).abs().max() < 1e-6
    # pieces of scripts the guard does not serve are the first to go
    vocabulary = trimmed.get_vocab()
    assert "▁посылка" not in vocabulary and "▁где" not in vocabulary
    # a dropped piece is spelled with the kept pieces it is made of; a character that no
    # kept piece holds becomes the unknown token
    assert "▁paket" not in vocabulary
    assert trimmed.tokenize("paket") != ["▁paket"]
    assert trimmed("Где", add_special_tokens=False)["input_ids"][-1] == trimmed.unk_token_id
    # the saved folder is a plain Hugging Face folder: the reference's three lines work
    trimmed_model.save_pretrained(tmp_path / "m")
    trimmed.save_pretrained(tmp_path / "m")
    classify = pipeline("text-classification", model=str(tmp_path / "m"))
    assert classify("where is my parcel")[0]["label"] in {"LABEL_0", "LABEL_1"}


def test_trimming_refuses_what_it_cannot_do(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = _unigram_tokenizer()
    model = _tiny_model(len(PIECES))
    with pytest.raises(DataError, match="raise it to at least"):
        trim_vocabulary(
            model, tokenizer, texts=["where is my parcel 我的包裹"], languages=["en"], size=5
        )
    with pytest.raises(DataError, match="script is not known"):
        trim_vocabulary(model, tokenizer, texts=["where"], languages=["en", "xx"], size=30)
    wordpiece = AutoTokenizer.from_pretrained(tiny_bert)
    with pytest.raises(ModelError, match="SentencePiece"):
        trim_vocabulary(model, wordpiece, texts=["where"], languages=["en"], size=30)


def test_a_layer_dropped_model_loads_with_the_plain_pipeline(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, pipeline

    tokenizer = _unigram_tokenizer()
    model = _tiny_model(len(PIECES), layers=4)
    drop_layers(model, 2)
    assert len(encoder_layers(model)) == 2 and model.config.num_hidden_layers == 2
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert len(encoder_layers(reloaded)) == 2
    assert (
        _logits(reloaded, tokenizer, ["where"]) - _logits(model, tokenizer, ["where"])
    ).abs().max() < 1e-6
    assert pipeline("text-classification", model=str(tmp_path / "m"))("where is my parcel")
    for bad in (0, 3, 9):
        with pytest.raises(DataError, match="between 1 and 2"):
            drop_layers(model, bad)


def test_frozen_lower_layers_get_no_gradient_and_the_rest_train() -> None:
    import torch

    tokenizer = _unigram_tokenizer()
    model = _tiny_model(len(PIECES), layers=4).train()
    freeze_lower_layers(model, 3)
    batch = tokenizer(["where is my parcel"], return_tensors="pt")
    model(**batch, labels=torch.tensor([1])).loss.backward()
    layers = encoder_layers(model)
    for layer in list(layers)[:3]:
        assert all(p.grad is None and not p.requires_grad for p in layer.parameters())
    assert all(p.grad is None for p in model.base_model.embeddings.parameters())
    assert all(p.grad is not None for p in layers[3].parameters())
    assert all(p.grad is not None for p in model.classifier.parameters())
    for bad in (0, 4, 9):  # at least one layer must train
        with pytest.raises(DataError, match="between 1 and 3"):
            freeze_lower_layers(model, bad)


def test_presets_and_their_bad_names() -> None:
    assert TrainConfig.from_preset("default") == TrainConfig()
    fast = TrainConfig.from_preset("fast", epochs=5, seed=None)
    assert fast.epochs == 5 and fast.seed == TrainConfig().seed
    assert fast.multilingual_layers == PRESETS["fast"]["multilingual_layers"]
    light = TrainConfig.from_preset("light")
    assert (light.soup, light.multilingual_layers, light.multilingual_vocabulary) == (1, 8, 32_000)
    default = TrainConfig()
    assert (default.soup, default.multilingual_layers, default.multilingual_vocabulary) == (
        1,
        None,
        32_000,
    )  # the shipped recipe keeps every layer of the multilingual model, not its vocabulary
    with pytest.raises(DataError, match="unknown preset 'quick'"):
        TrainConfig.from_preset("quick")
    with pytest.raises(DataError, match="unknown training setting"):
        TrainConfig.from_preset("fast", multilingual_layer=6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "quick"], "unknown preset 'quick'"),
        (["--multilingual-layers", "-1"], "multilingual layers must be at least 1"),
        (["--multilingual-frozen-layers", "-2"], "multilingual frozen layers must be at least"),
        (["--multilingual-vocabulary", "-5"], "multilingual vocabulary must be at least 1"),
        (["--precision", "fp16"], "precision must be one of auto, bf16, fp32"),
    ],
)
def test_train_cli_refuses_bad_recipes_in_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "m"), *args])
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frozen-layers", "6"], "frozen layers must be between 1 and 5"),
        (["--layers", "9"], "layers must be between 1 and 6"),
        (["--multilingual-frozen-layers", "12"], "frozen layers must be between 1 and 11"),
        (["--multilingual-layers", "4", "--multilingual-frozen-layers", "4"], "between 1 and 3"),
    ],
)
def test_train_refuses_layer_counts_the_base_models_cannot_take_before_training(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """Checked against each base model's config before any model trains: a routed guard
    trains its multilingual model first, so a bad count for the fast model would otherwise
    fail only after it."""
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "m"), *args])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and message in errors[0]
    assert "epoch" not in result.stderr  # nothing trained
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []


def test_train_records_its_timings_and_a_trimmed_multilingual_model(
    tiny_bert: Path, small_rows: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A routed guard whose stand-in multilingual model is a 4-layer Unigram-vocabulary BERT:
    the guard keeps 2 of its layers and trims its vocabulary, and the folder still serves."""
    import topicguard.e5
    from topicguard import TopicGuard
    from topicguard.data import Example
    from topicguard.folder import METADATA_FILE, MULTILINGUAL_DIR
    from topicguard.spec import GuardSpec, bundled_example, load_spec
    from topicguard.training import train_guard

    stand_in = tmp_path / "stand-in"
    _tiny_model(len(PIECES)).save_pretrained(stand_in)
    _unigram_tokenizer().save_pretrained(stand_in)
    monkeypatch.setattr(topicguard.e5, "multilingual_model_path", lambda: str(stand_in))
    spec = GuardSpec.model_validate(
        {**load_spec(bundled_example()).model_dump(), "languages": ["en", "zh"]}
    )
    rows = [Example(text=r["text"], label=r["label"], lang="en") for r in small_rows]
    rows += [
        Example(text=t, label=label, lang="zh")
        for t, label in (("我的包裹在哪", True), ("包裹在哪", True), ("我的", False), ("的", False))
    ] * 2
    config = TrainConfig(
        base_model=str(tiny_bert),
        epochs=1,
        batch_size=4,
        validation_size=0.3,
        max_length=32,
        multilingual_layers=2,
        multilingual_vocabulary=40,
        multilingual_epochs=2,
        soup=1,
    )
    result = train_guard(rows, tmp_path / "g", config, spec=spec)
    assert result.multilingual is not None
    assert {"load", "tokenize", "epoch 1", "validate", "calibrate", "save"} <= set(result.timings)
    assert "trim vocabulary" in result.multilingual.timings
    # each model makes its own number of passes
    assert "epoch 2" in result.multilingual.timings and "epoch 2" not in result.timings
    assert result.tokens_per_epoch > 0
    second = tmp_path / "g" / MULTILINGUAL_DIR
    meta = json.loads((second / METADATA_FILE).read_text())
    assert meta["timings"] and meta["tokens_per_epoch"] > 0
    saved = json.loads((second / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2 and saved["vocab_size"] <= 40
    guard = TopicGuard.load(tmp_path / "g")
    assert guard.judge(["我的包裹在哪"]).langs == ["zh"]
