"""Training-time augmentation: labels, determinism, counts, Chinese noise, and that training
augments its training rows only."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import topicguard.augment
import topicguard.training.guard
from topicguard import DataError
from topicguard.augment import (
    KINDS,
    MIX_EXCLUDED,
    SOCIAL_TEXTS,
    augment,
    count_augmented,
    is_augmented,
)
from topicguard.cli import app
from topicguard.data import Example, normalize_text, read_dataset
from topicguard.spec import bundled_example, load_spec
from topicguard.training import TrainConfig, train, train_multilingual

FAST = settings(max_examples=60, deadline=None)
HAN = re.compile(r"[\u4e00-\u9fff]")
# markers that no noise changes (typos skip words with digits) and no social text holds
ON, OFF = "on1", "off1"
LATIN_BODY = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzéäñ ?!,."), max_size=40)
CHINESE_BODY = st.text(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF) | st.sampled_from("，。？！ ,.?!"),
    max_size=30,
)


def _row(draw: Any, label: bool, lang: str) -> Example:
    body = draw(CHINESE_BODY if lang == "zh" else LATIN_BODY)
    category = draw(st.sampled_from([None, "competitors", "jailbreak", "food_recipes"]))
    return Example(
        text=f"{ON if label else OFF} {body}",
        label=label,
        category=None if label else category,
        lang=lang,
    )


@st.composite
def datasets(draw: Any) -> list[Example]:
    rows = []
    for lang in draw(st.lists(st.sampled_from(["en", "de", "fr", "zh"]), min_size=1, max_size=3)):
        labels = draw(st.lists(st.booleans(), min_size=1, max_size=25))
        rows += [_row(draw, label, lang) for label in labels]
    return rows


@FAST
@given(datasets(), st.integers(0, 2**32), st.floats(0, 1))
def test_a_blocked_request_stays_blocked_whatever_is_joined_to_it(
    rows: list[Example], seed: int, ratio: float
) -> None:
    made = augment(rows, seed=seed, ratio=ratio)
    for row in made:
        assert is_augmented(row)
        # mixed rows hold a blocked request, social rows their own row's marker, noise rows
        # their source's: the label follows the blocked marker
        assert row.label == (OFF not in row.text), row
        if row.source == "augment:mixed":
            assert ON in row.text and OFF in row.text
    # at most `ratio` of each language's rows, so at most `ratio` of all
    per_lang = Counter(r.lang for r in rows)
    made_per_lang = Counter(r.lang for r in made)
    for lang, n in made_per_lang.items():
        assert n <= math.floor(ratio * per_lang[lang] + 1e-9)
    assert len(made) <= math.floor(ratio * len(rows) + 1e-9)
    assert not {r.text for r in made} & {r.text for r in rows}
    again = augment(rows + made, seed=seed, ratio=ratio)  # made rows are not used again
    assert len(again) <= math.floor(ratio * len(rows) + 1e-9)


@pytest.fixture(scope="module")
def bundled_rows() -> list[Example]:
    rows = read_dataset(bundled_example().parent / "queries.jsonl")
    return rows[::7]  # ~2,000 rows of every language and category


def test_augmentation_is_deterministic_and_fills_its_budget(bundled_rows: list[Example]) -> None:
    made = augment(bundled_rows, seed=7, ratio=0.15)
    assert made == augment(bundled_rows, seed=7, ratio=0.15)
    assert made != augment(bundled_rows, seed=8, ratio=0.15)
    per_lang = Counter(r.lang for r in bundled_rows)
    made_per_lang = Counter(r.lang for r in made)
    for lang, n in per_lang.items():
        assert made_per_lang[lang] == math.floor(0.15 * n + 1e-9), lang  # every language
    counts = count_augmented(made)
    assert set(counts) == set(KINDS) and all(counts.values())
    assert sum(counts.values()) == len(made)
    assert counts["noise"] > counts["mixed"] > counts["social"]
    mixed = [r for r in made if r.source == "augment:mixed"]
    assert all(not r.label and r.category not in MIX_EXCLUDED for r in mixed)
    assert {r.lang for r in mixed} == set(per_lang)  # the multilingual model's languages too
    if importlib.util.find_spec("opencc"):  # the augment extra: traditional characters too
        simplified = set("".join(r.text for r in bundled_rows if r.lang == "zh"))
        noise = "".join(r.text for r in made if r.lang == "zh" and r.source == "augment:noise")
        assert set(HAN.findall(noise)) - simplified
    assert augment(bundled_rows, seed=7, ratio=0) == []
    assert augment(bundled_rows, seed=7, ratio=0.15, languages=["de"]) == [
        r for r in made if r.lang == "de"
    ]


@FAST
@given(CHINESE_BODY.filter(lambda t: len(HAN.findall(t)) >= 2), st.integers(0, 2**32))
def test_chinese_noise_keeps_the_text_chinese(text: str, seed: int) -> None:
    row = Example(text=text, label=True, lang="zh")
    for noisy in augment([row], seed=seed, ratio=1.0):  # one row: its noise, if any
        assert noisy.source == "augment:noise" and noisy.label
        assert not re.search(r"[A-Za-z]", noisy.text)
        assert len(HAN.findall(noisy.text)) >= 0.8 * len(HAN.findall(text))


def test_chinese_noise_without_a_converter_is_skipped_with_a_debug_line(
    bundled_rows: list[Example], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from topicguard import augment as module

    chinese = [r for r in bundled_rows if r.lang == "zh"]
    monkeypatch.setitem(sys.modules, "opencc", None)  # import fails as if not installed
    module._traditional_converter.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger="topicguard.augment"):
            made = augment(chinese, seed=1, ratio=1.0)
    finally:
        module._traditional_converter.cache_clear()
    assert sum("opencc is not installed" in r.message for r in caplog.records) == 1
    noise = [r for r in made if r.source == "augment:noise"]
    assert len(noise) >= 0.9 * math.floor(0.5 * len(chinese))
    assert all(HAN.search(r.text) for r in noise)


def test_latin_noise_looks_typed() -> None:
    rows = [
        Example(text=f"Where is my parcel number {i}? It's late again!", label=True, lang="en")
        for i in range(40)
    ]
    noise = [r.text for r in augment(rows, seed=3, ratio=1.0) if r.source == "augment:noise"]
    assert len(noise) == 20
    assert any(t == t.lower() for t in noise) and any("?" not in t for t in noise)
    assert not set(noise) & {r.text for r in rows}


def test_social_texts_cover_the_bundled_languages() -> None:
    for lang in ("en", "zh", "es", "de", "fr"):
        texts = SOCIAL_TEXTS[lang]
        assert len(set(texts)) >= 15, lang
        assert not any(re.search(r"\d", t) for t in texts)


def test_too_few_source_rows_give_fewer_rows_and_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # German whose only blocked row is a competitor question: nothing to mix with
    rows = [Example(text=f"wo ist mein Paket {i}", label=True, lang="de") for i in range(20)]
    rows += [
        Example(text="was kostet DHL nach Wien", label=False, category="competitors", lang="de")
    ]
    with caplog.at_level(logging.WARNING, logger="topicguard.augment"):
        made = augment(rows, seed=0, ratio=0.5)
    assert count_augmented(made)["mixed"] == 0 and 0 < len(made) < 10
    assert len(caplog.records) == 1
    assert "too few on-topic and blocked" in caplog.records[0].message
    assert "in de" in caplog.records[0].message


def test_bad_augment_settings_give_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"augment ratio must be in \[0, 1\], got 2$"):
        TrainConfig(augment_ratio=2).validate()
    with pytest.raises(DataError, match="augment ratio"):
        augment([], seed=0, ratio=-0.1)
    result = CliRunner().invoke(
        app, ["train", "--out", str(tmp_path / "m"), "--augment-ratio", "1.5"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if "augment ratio" in line
    ]
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], (True, 0.15)),
        (["--no-augment"], (False, 0.15)),
        (["--augment-ratio", "0.3"], (True, 0.3)),
    ],
)
def test_train_cli_passes_the_augment_options(
    args: list[str], expected: tuple[bool, float], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[TrainConfig] = []

    def fake_train_guard(examples: Any, out_dir: Any, config: TrainConfig, **kwargs: Any) -> Any:
        seen.append(config)
        raise DataError("stopped before training")

    monkeypatch.setattr(topicguard.training.guard, "train_guard", fake_train_guard)
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "m"), *args])
    assert "stopped before training" in result.stderr
    assert (seen[0].augment, seen[0].augment_ratio) == expected


def _plain(rows: list[dict[str, Any]]) -> list[Example]:
    """The fixture rows without categories: every blocked row is taken by its label."""
    return [Example(text=r["text"], label=r["label"]) for r in rows]


def test_training_augments_its_training_rows_only(
    tiny_bert: Path,
    small_rows: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _plain(small_rows)
    train_rows, validation = rows[:6] + rows[8:14], rows[6:8] + rows[14:]
    real = topicguard.augment.augment
    # a validation row that augmentation would make, but for case and punctuation
    planted = real(train_rows, seed=42, ratio=1.0)[0]
    validation.append(Example(text=planted.text.upper() + " !", label=planted.label))
    before = list(validation)
    calls: list[tuple[list[Example], list[Example]]] = []

    def spy(rows: Any, **kwargs: Any) -> list[Example]:
        made = real(rows, **kwargs)
        calls.append((list(rows), made))
        return made

    monkeypatch.setattr(topicguard.augment, "augment", spy)
    config = TrainConfig(
        base_model=str(tiny_bert),
        epochs=1,
        soup=1,
        average_last=1,
        batch_size=4,
        max_length=32,
        augment_ratio=1.0,
    )
    result = train(train_rows, tmp_path / "m", config, validation=validation)
    assert validation == before  # the validation rows are untouched
    ((seen, made),) = calls
    assert seen == train_rows  # augmentation saw the training rows, and only them
    held_out = {normalize_text(e.text) for e in validation}
    kept = [e for e in made if normalize_text(e.text) not in held_out]
    assert len(kept) == len(made) - 1  # the planted copy was dropped
    assert not {e.text for e in kept} & {e.text for e in validation}
    meta = json.loads((tmp_path / "m" / "topicguard.json").read_text())
    assert meta["data"]["augmented"] == count_augmented(kept)
    assert meta["data"]["n_train"] == result.n_train == len(train_rows)
    assert meta["data"]["n_validation"] == len(validation)
    assert meta["training"]["augment"] is True and meta["training"]["augment_ratio"] == 1.0

    calls.clear()
    off = dataclasses.replace(config, augment=False)
    train(train_rows, tmp_path / "off", off, validation=validation)
    meta = json.loads((tmp_path / "off" / "topicguard.json").read_text())
    assert not calls and meta["data"]["augmented"] == dict.fromkeys(KINDS, 0)


def test_the_multilingual_model_gets_its_languages_augmented_rows_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [
        Example(text=f"where is my parcel number {i}", label=True, lang="en") for i in range(20)
    ]
    rows += [Example(text=f"write a poem about the number {i}", label=False) for i in range(20)]
    rows = [Example(text=r.text, label=r.label, lang="en") for r in rows]
    rows += [Example(text=f"我的包裹{i}号在哪里", label=True, lang="zh") for i in range(20)]
    rows += [
        Example(text=f"帮我写一首关于{i}号的诗", label=False, category="writing", lang="zh")
        for i in range(20)
    ]
    calls: list[tuple[list[Example], dict[str, Any]]] = []

    def fake_train(examples: Any, out_dir: Any, config: Any, **kwargs: Any) -> Any:
        calls.append((list(examples), kwargs))

    monkeypatch.setattr(topicguard.training.guard, "train", fake_train)
    config = TrainConfig(multilingual_repeat=2, augment_ratio=0.5, validation_size=0.2)
    train_multilingual(rows, "unused", config, languages=["zh"], spec=load_spec(bundled_example()))
    ((examples, kwargs),) = calls
    assert kwargs["augmented"] is True  # train() must not augment again
    validation = kwargs["validation"]
    assert not any(is_augmented(e) for e in validation)
    made = [e for e in examples if is_augmented(e)]
    assert not {e.text for e in made} & {e.text for e in validation}
    zh_mixed = Counter(e.text for e in made if e.lang == "zh" and e.source == "augment:mixed")
    assert zh_mixed and set(zh_mixed.values()) == {2}  # repeated with the other Chinese rows
    assert {e.lang for e in made} == {"en", "zh"}
    assert all(e.text not in {r.text for r in validation} for e in examples)
