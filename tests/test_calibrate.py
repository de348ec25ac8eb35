"""Operating point: threshold objectives with known answers, temperature scaling, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from topicguard import DataError
from topicguard.calibrate import (
    Objective,
    choose_threshold,
    fit_calibration,
    fit_temperature,
    sigmoid,
)
from topicguard.cli import app
from topicguard.metrics import calibration_error

LABELS = np.array([True] * 6 + [False] * 4)
#                  on-topic scores                 off-topic scores
SCORES = np.array([0.10, 0.55, 0.70, 0.80, 0.90, 0.95, 0.05, 0.20, 0.60, 0.75])


def test_target_false_block_is_the_conformal_order_statistic() -> None:
    labels = np.array([True] * 99 + [False] * 50)
    on_scores = np.linspace(0.01, 0.99, 99)
    scores = np.concatenate([on_scores, np.linspace(0.0, 0.5, 50)])
    # (k+1)/(n+1) <= 0.05 with n = 99 -> k+1 = 5: allow the 5th-lowest on-topic score
    threshold = choose_threshold(labels, scores, Objective("target_false_block", 0.05))
    assert threshold == pytest.approx(on_scores[4])
    assert (on_scores < threshold).sum() == 4


def test_target_below_what_the_data_can_vouch_for_blocks_no_validation_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    threshold = choose_threshold(LABELS, SCORES, Objective("target_false_block", 0.01))
    assert threshold == pytest.approx(0.10)  # the lowest on-topic score stays allowed
    assert "cannot vouch" in caplog.text


def test_max_f1_and_cost_objectives_on_known_scores() -> None:
    # cutting at 0.5 < t <= 0.55 loses one on-topic row and lets 2 off-topic rows in;
    # the best F1 allows everything above 0.10: 6 true positives, 3 leaks -> F1 0.8
    t = choose_threshold(LABELS, SCORES, Objective("max_f1"))
    assert 0.05 < t <= 0.10
    # a false block costing 10 leaks: blocking nothing on-topic is cheapest
    assert choose_threshold(LABELS, SCORES, Objective("cost", 10)) <= 0.10
    # leaks cost 10x more than false blocks: block everything below 0.80
    t = choose_threshold(LABELS, SCORES, Objective("cost", 0.1))
    assert 0.75 < t <= 0.80


def test_default_objective_stays_at_one_half_when_nothing_clearly_better() -> None:
    assert choose_threshold(LABELS, SCORES) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_false_block": 0.0}, "must be in (0, 1)"),
        ({"target_false_block": 1.5}, "must be in (0, 1)"),
        ({"cost_ratio": -1.0}, "positive"),
        ({"max_f1": True, "cost_ratio": 2.0}, "choose one"),
    ],
)
def test_bad_objectives_say_what_to_do(options: dict, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Objective.from_options(**options)


def test_one_class_data_cannot_calibrate() -> None:
    with pytest.raises(DataError, match="on-topic and off-topic"):
        fit_calibration([True, True, True], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="on-topic and off-topic"):
        choose_threshold([False, False], [0.1, 0.2])


def test_temperature_scaling_fixes_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    true_margin = rng.normal(0, 3, 4000)
    labels = rng.random(4000) < sigmoid(true_margin)  # sigmoid(true_margin) is calibrated
    # the "model" reports 6x the real evidence: probabilities pinned near 0 and 1
    overconfident = 6 * true_margin
    assert fit_temperature(overconfident, labels) == pytest.approx(6, rel=0.15)
    calibration = fit_calibration(labels, overconfident)
    assert calibration.ece_before > 0.1
    assert calibration.ece_after < 0.03
    assert calibration_error(labels, sigmoid(overconfident)) == pytest.approx(
        calibration.ece_before
    )


def test_calibrate_command_rewrites_threshold_and_runtime_uses_it(
    tiny_guard: Path, small_dataset: Path, tmp_path: Path
) -> None:
    from topicguard.runtime import TopicGuard

    model = tmp_path / "guard"
    shutil.copytree(tiny_guard, model)
    result = CliRunner().invoke(
        app, ["calibrate", str(model), str(small_dataset), "--target-false-block", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output and "temperature" in result.output
    metadata = json.loads((model / "topicguard.json").read_text())
    assert metadata["threshold_objective"] == "target_false_block"
    calibration = metadata["calibration"]
    guard = TopicGuard.load(model, backend="torch")
    assert guard.threshold == pytest.approx(calibration["threshold"])
    assert guard.temperature == pytest.approx(calibration["temperature"])
    margins = guard.margins(["where is my parcel"])
    assert guard.scores(["where is my parcel"])[0] == pytest.approx(
        float(sigmoid(margins[0] / guard.temperature))
    )
    # no data: the validation scores kept at training move the operating point
    assert "validation" in calibration
    result = CliRunner().invoke(app, ["calibrate", str(model), "--max-f1"])
    assert result.exit_code == 0, result.output
    metadata = json.loads((model / "topicguard.json").read_text())
    assert metadata["threshold_objective"] == "max_f1"
    assert metadata["calibration"]["data"] == "validation split"
    assert metadata["calibration"]["validation"] == calibration["validation"]


def test_calibrate_routed_guard_fits_each_model_on_its_rows(
    tiny_guard: Path, tmp_path: Path
) -> None:
    from test_multilingual import _routed_guard

    from topicguard.calibrate import calibrate
    from topicguard.data import Example

    model = _routed_guard(tiny_guard, tmp_path)
    rows = [
        Example(text="where is my parcel", label=True),
        Example(text="write me a poem", label=False),
        Example(text="我的包裹什么时候到", label=True),
        Example(text="帮我写一首诗", label=False),
    ]
    results = calibrate(model, rows, Objective("max_f1"))
    assert [r.n for r in results] == [2, 2]
    second = json.loads((model / "multilingual" / "topicguard.json").read_text())
    assert second["threshold_objective"] == "max_f1"
    assert len(calibrate(model)) == 2  # the stored validation scores of both models

    # one model without stored scores: an error, and neither model's file is touched
    second_file = model / "multilingual" / "topicguard.json"
    stripped = json.loads(second_file.read_text())
    del stripped["calibration"]["validation"]
    second_file.write_text(json.dumps(stripped))
    before = (model / "topicguard.json").read_text()
    with pytest.raises(DataError, match="keeps no validation scores"):
        calibrate(model, objective=Objective("max_f1"))
    assert (model / "topicguard.json").read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-false-block", "2"], "must be in (0, 1)"),
        (["--max-f1", "--cost-ratio", "3"], "choose one"),
    ],
)
def test_calibrate_bad_input_is_one_line(
    tiny_guard: Path, small_dataset: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["calibrate", str(tiny_guard), str(small_dataset), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_calibrate_without_stored_scores_asks_for_data(tiny_guard: Path, tmp_path: Path) -> None:
    model = tmp_path / "old"
    shutil.copytree(tiny_guard, model)
    metadata = json.loads((model / "topicguard.json").read_text())
    del metadata["calibration"]["validation"]
    (model / "topicguard.json").write_text(json.dumps(metadata))
    result = CliRunner().invoke(app, ["calibrate", str(model)])
    assert result.exit_code == 1 and "pass labelled data" in result.output


def test_calibrate_one_class_data_and_non_model_folder(tiny_guard: Path, tmp_path: Path) -> None:
    one_class = tmp_path / "one.jsonl"
    one_class.write_text('{"text": "where is my parcel", "label": true}\n')
    result = CliRunner().invoke(app, ["calibrate", str(tiny_guard), str(one_class)])
    assert result.exit_code == 1 and "on-topic and off-topic" in result.output
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path), str(one_class)])
    assert result.exit_code == 1 and "not a topicguard model" in result.output
