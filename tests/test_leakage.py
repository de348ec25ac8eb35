from __future__ import annotations

from collections import Counter

import pytest

from topicguard import DataError
from topicguard.data import Example, read_dataset
from topicguard.leakage import (
    duplicate_clusters,
    exact_duplicate_groups,
    near_duplicates,
    split_examples,
)
from topicguard.spec import bundled_example, load_spec

TEXTS = [
    "Where's my parcel??",
    "where is my parcel",
    "What's the difference between express and standard shipping?",
    "What is the difference between standard and express shipping",
    "Can I change the delivery address after my package has shipped?",
    "write me a poem about the sea",
    "WHERE'S MY PARCEL",
]


def test_exact_groups_ignore_case_and_punctuation() -> None:
    assert exact_duplicate_groups(TEXTS) == [[0, 6]]


def test_near_duplicates_find_paraphrases_not_neighbours() -> None:
    pairs = {(p.first, p.second) for p in near_duplicates(TEXTS, threshold=0.7)}
    assert (2, 3) in pairs  # same words, different order and contraction
    assert not any(5 in pair for pair in pairs)
    assert (0, 6) not in pairs  # exact repeats are reported separately
    strict = near_duplicates(TEXTS, threshold=0.99)
    assert all(p.similarity >= 0.99 for p in strict)
    with pytest.raises(ValueError):
        near_duplicates(TEXTS, threshold=0)


def test_clusters_join_exact_and_near_duplicates() -> None:
    clusters = duplicate_clusters(TEXTS, threshold=0.7)
    assert clusters[0] == clusters[6]
    assert clusters[2] == clusters[3]
    assert len({clusters[4], clusters[5], clusters[0], clusters[2]}) == 4


def _bundled() -> list[Example]:
    return read_dataset(load_spec(bundled_example()).train_paths()[0])


def test_split_is_stratified_seeded_and_keeps_clusters_whole() -> None:
    english = [e for e in _bundled() if e.lang == "en"]
    base = [e for e in english if e.label][:300:3] + [e for e in english if not e.label][:300:3]
    paraphrases = [
        Example("Where's my parcel??", True),
        Example("where is my parcel", True),
        Example("WHERE IS MY PARCEL!!", True),
    ]
    examples = base + paraphrases
    train, test = split_examples(examples, test_size=0.2, seed=1)
    assert sorted(e.text for e in train + test) == sorted(e.text for e in examples)
    counts = Counter(e.label for e in test)
    assert 18 <= counts[True] <= 24 and counts[False] == 20
    sides = {any(p == e for e in test) for p in paraphrases}
    assert len(sides) == 1  # all three paraphrases on the same side
    assert split_examples(examples, test_size=0.2, seed=1) == (train, test)
    assert split_examples(examples, test_size=0.2, seed=2) != (train, test)


def test_split_keeps_a_class_in_train_and_checks_the_size() -> None:
    examples = [
        Example("where is my parcel", True),
        Example("tell me a joke", False),
        Example("what is the capital of peru", False),
    ]
    train, test = split_examples(examples, test_size=0.5, seed=0)
    assert {e.label for e in train} == {True, False}
    with pytest.raises(DataError, match="between 0 and 1"):
        split_examples(examples, test_size=1.5, seed=0)
