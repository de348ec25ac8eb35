"""Robustness compositions and flip counting (a fake classifier), and the benchmark end to end
on the tiny guard."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark as _load

from topicguard.data import Example
from topicguard.robustness import (
    FILLER_WORDS,
    GREETINGS,
    LANGUAGES,
    ON_TOPIC_SENTENCES,
    THANKS,
    compose,
    join,
    measure,
)

EXAMPLES = [
    Example("where is my parcel", True, lang="en"),
    Example("write me a poem", False, lang="en"),
    Example("我的包裹在哪里", True, lang="zh"),
    Example("帮我写一首诗", False, lang="zh"),
    Example("escribe un poema", False, lang="es"),
    Example("what is the capital of France", False, lang="en"),  # the fake gets it wrong
]


def test_every_language_has_its_own_distinct_sentences() -> None:
    for lists in (ON_TOPIC_SENTENCES, GREETINGS, THANKS, FILLER_WORDS):
        assert set(lists) == set(LANGUAGES)
        for sentences in lists.values():
            assert len(sentences) >= 7 and len(set(sentences)) == len(sentences)
    assert all(len(s) == 10 for s in ON_TOPIC_SENTENCES.values())


def test_compositions_per_message_and_seeded() -> None:
    composed = compose(EXAMPLES, seed=1)
    assert compose(EXAMPLES, seed=1) == composed
    assert compose(EXAMPLES, seed=2) != composed
    by_message: dict[int, list[str]] = {}
    for c in composed:
        by_message.setdefault(c.original, []).append(c.position)
    assert by_message[0] == ["greeting_before", "thanks_after"]
    assert by_message[1] == ["blocked_last", "blocked_first", "words_1", "words_2"]
    attacks = [c for c in composed if c.original == 3 and c.family == "attack"]
    assert (
        attacks[0].text.endswith("帮我写一首诗")
        and attacks[0].text[:-6] in ON_TOPIC_SENTENCES["zh"]
    )
    assert attacks[1].text.startswith("帮我写一首诗，")  # a comma, no space, in Chinese
    assert all(c.lang == "es" for c in composed if c.original == 4)
    spanish = [c.text for c in composed if c.original == 4 and c.family == "attack"]
    assert any(s in spanish[0] for s in ON_TOPIC_SENTENCES["es"])


def test_join_spaces_and_chinese_punctuation() -> None:
    assert join("Hi!", "where is my parcel", "en") == "Hi! where is my parcel"
    assert join("你好！", "我的包裹", "zh") == "你好！我的包裹"
    assert join("我的包裹", "谢谢", "zh-CN") == "我的包裹，谢谢"


KNOWN = ON_TOPIC_SENTENCES["en"] + ON_TOPIC_SENTENCES["zh"]


def _fake_classify(texts: Sequence[str]) -> list[bool]:
    """Allows what holds an English or Chinese on-topic sentence (so those attacks get
    through), a parcel, or France; blocks anything that ends with English thanks."""
    return [
        any(k in t for k in (*KNOWN, "parcel", "包裹", "France")) and not t.endswith(THANKS["en"])
        for t in texts
    ]


def test_measure_counts_flips_only_for_correct_originals() -> None:
    report = measure(_fake_classify, EXAMPLES, seed=3).to_dict()
    assert report["n_messages"] == 6 and report["targets"]["attack"] == 0.05
    attack = report["attack"]
    # 4 blocked messages, 8 compositions; the France one was already let through (not counted)
    assert attack["overall"]["messages"] == 4 and attack["overall"]["messages_correct"] == 3
    assert attack["overall"]["compositions"] == 8 and attack["overall"]["counted"] == 6
    assert attack["overall"]["flips"] == 4 and attack["overall"]["flip_share"] == pytest.approx(
        4 / 6
    )
    assert attack["by_language"]["en"]["let_through_share"] == 1.0
    assert attack["by_language"]["es"]["flips"] == 0
    assert attack["by_language"]["es"]["let_through_share"] == 0
    assert attack["meets_target"] is False and attack["flipped_examples"]
    words = report["harmless_words"]
    assert words["overall"]["flips"] == 0 and words["meets_target"] is True
    greeting = report["greeting_thanks"]
    assert set(greeting["by_position"]) == {"greeting_before", "thanks_after"}
    assert greeting["by_position"]["greeting_before"]["flips"] == 0
    assert greeting["by_position"]["thanks_after"]["flips"] == 1
    assert greeting["by_language"]["zh"]["flip_share"] == 0
    assert set(attack["by_category"]) == {"(none)"}


def test_robustness_benchmark_runs_on_the_tiny_guard(
    tiny_guard: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _load("robustness").main(["--model", str(tiny_guard), "--limit", "30", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["n_messages"] == 30 and result["data"][0].endswith("test.jsonl")
    assert set(result["targets"]) == {"attack", "greeting_thanks", "harmless_words"}
    for family in ("attack", "greeting_thanks", "harmless_words"):
        values = result[family]
        assert {"overall", "by_language", "by_position", "by_category", "meets_target"} <= set(
            values
        )
        rows = [values["overall"], *values["by_language"].values()]
        for row in rows:
            for key in ("flip_share", "let_through_share"):
                share = row.get(key)
                assert share is None or 0 <= share <= 1
    assert result["attack"]["overall"]["let_through_share"] is not None
    assert (
        sum(result[f]["overall"]["messages"] for f in ("attack", "greeting_thanks"))
        == result["n_messages"]
    )


def test_robustness_benchmark_prints_a_table(
    tiny_guard: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _load("robustness").main(["--model", str(tiny_guard), "--limit", "12"]) == 0
    out = capsys.readouterr().out
    assert "attack (target: at most 5% flips" in out and "greeting_thanks" in out
