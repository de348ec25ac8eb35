from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from topicguard import SpecError
from topicguard.metrics import accuracy_threshold, compute_metrics
from topicguard.spec import bundled_example, load_spec


def test_bundled_spec_loads_with_policy_and_data() -> None:
    spec = load_spec(bundled_example())
    assert spec.company == "Spellbots Logistics"
    assert spec.labels.allowed == "True" and spec.labels.blocked == "False"
    assert any("UPS" in topic for topic in spec.blocked_topics)
    assert "jailbreak" in spec.policy
    assert all(p.is_file() for p in spec.train_paths())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\n", "company: Field required"),
        ("- a list\n", "must be a YAML mapping"),
        ("name: [unclosed\n", "cannot read spec"),
        (
            "name: x\ncompany: y\npurpose: z\nallowed_topics: []\nblocked_topics: [a]\npolicy: p\n",
            "allowed_topics",
        ),
        (
            "name: x\ncompany: y\npurpose: z\nallowed_topics: [a]\nblocked_topics: [b]\n"
            "policy: p\ncolour: red\n",
            "colour: Extra inputs are not permitted",
        ),
    ],
)
def test_invalid_specs_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "guard.yaml"
    path.write_text(content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert message in str(info.value)


def test_missing_spec_and_unknown_example(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="available: logistics"):
        bundled_example("banking")


def test_metrics_on_known_counts() -> None:
    labels = np.array([True, True, True, True, False, False, False, False])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1])
    m = compute_metrics(labels, scores, threshold=0.5)
    # 3 of 4 on-topic allowed, 1 of 4 off-topic leaked
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["false_block_rate"] == pytest.approx(1 / 4)
    assert m["leak_rate"] == pytest.approx(1 / 4)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["roc_auc"] == pytest.approx(15 / 16)  # one of 16 pairs ordered wrongly
    assert m["threshold"] == 0.5


def test_accuracy_threshold_separates_and_prefers_the_middle() -> None:
    labels = np.array([True, True, False, False])
    assert accuracy_threshold(labels, np.array([0.9, 0.8, 0.3, 0.1])) == 0.5
    threshold = accuracy_threshold(labels, np.array([0.3, 0.25, 0.2, 0.1]))
    assert 0.2 < threshold < 0.3
    assert accuracy_threshold(np.array([True, True]), np.array([0.1, 0.2])) == 0.5


def test_accuracy_threshold_ignores_gains_smaller_than_the_noise() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([True] * 100 + [False] * 100)
    scores = np.where(labels, rng.uniform(0.6, 1.0, 200), rng.uniform(0.0, 0.4, 200))
    scores[100] = 0.97  # one off-topic query scored very high
    # 0.98 would win that row (200/200 vs 199/200), a gain within one standard error
    assert accuracy_threshold(labels, scores) == 0.5
    scores[101:110] = 0.55  # nine more leaks just above 0.5: moving up clearly pays
    assert 0.55 < accuracy_threshold(labels, scores) < 0.6
