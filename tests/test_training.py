"""The parts of training that need no real fine-tuning: averaging on hand-made state dicts,
which weights to keep, and the spec's defaults for base model, data and output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import topicguard.training.guard
from topicguard import DataError
from topicguard.models import DEFAULT_BASE_MODEL
from topicguard.spec import bundled_example, load_spec
from topicguard.training import TrainConfig, default_out_dir, train_guard, train_spec
from topicguard.training.averaging import add_weights, describe_kept, keep_mean, mean_weights


def test_a_soup_of_two_runs_of_two_epochs_is_the_mean_of_four_states() -> None:
    states = [
        {"w": torch.tensor([float(i), 2.0 * i], dtype=torch.bfloat16), "ids": torch.tensor([i])}
        for i in range(1, 5)
    ]
    run_sums = [add_weights(add_weights({}, states[0]), states[1])]
    run_sums.append(add_weights(add_weights({}, states[2]), states[3]))
    total: dict[str, Any] = {}
    for run in run_sums:
        total = add_weights(total, run)
    assert "ids" not in total  # integer tensors are not summed
    mean = mean_weights(total, 4, template=states[-1])
    assert mean["w"].dtype == torch.bfloat16 and mean["w"].tolist() == [2.5, 5.0]
    assert mean["ids"] is states[-1]["ids"]  # taken from the template
    assert states[0]["w"].tolist() == [1.0, 2.0]  # the inputs are left as they were
    with pytest.raises(ValueError, match="a mean of 0 states"):
        mean_weights(total, 0, template=states[0])


@pytest.mark.parametrize(
    ("mean", "best", "n", "kept"),
    [
        (0.90, 0.90, 500, True),  # a tie keeps the steadier mean
        (0.89, 0.90, 500, True),  # within one standard error (0.0134)
        (0.87, 0.90, 500, False),  # beyond it
        (0.87, 0.90, 50, True),  # 50 rows cannot tell 3 points apart (0.042)
        (0.50, 1.00, 100, False),  # a perfect epoch has no noise to hide behind
        (0.10, 0.90, 0, True),  # nothing to decide on: the mean
    ],
)
def test_the_mean_is_kept_unless_an_epoch_beats_it_beyond_the_noise(
    mean: float, best: float, n: int, kept: bool
) -> None:
    assert keep_mean(mean, best, n) is kept


def test_the_kept_weights_are_described_in_words() -> None:
    assert describe_kept(3, [2, 3, 4]) == "the mean of epochs 2-4"
    assert describe_kept(3, [4], runs=2) == "the mean of epoch 4 of 2 runs"
    assert describe_kept(3, []) == "epoch 3"
    assert describe_kept(3, [], runs=2, best_run=2) == "epoch 3 of run 2"


def test_the_base_model_is_the_configs_else_the_specs_else_the_default() -> None:
    spec = load_spec(bundled_example())
    assert TrainConfig().resolved(None).base_model == DEFAULT_BASE_MODEL
    assert TrainConfig().resolved(spec).base_model == spec.base_model or DEFAULT_BASE_MODEL
    own = spec.model_copy(update={"base_model": "my/encoder"})
    assert TrainConfig().resolved(own).base_model == "my/encoder"
    assert TrainConfig(base_model="other").resolved(own).base_model == "other"


def test_train_guard_uses_the_specs_base_model(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[TrainConfig] = []

    def fake_train(examples: Any, out_dir: Any, config: TrainConfig, **kwargs: Any) -> Any:
        seen.append(config)
        return "trained"

    monkeypatch.setattr(topicguard.training.guard, "train", fake_train)
    monkeypatch.setattr(topicguard.training.guard, "_check_readable", lambda *a: None)
    spec = load_spec(bundled_example()).model_copy(
        update={"base_model": "my/encoder", "languages": ["en"]}
    )
    assert train_guard([], "unused", spec=spec) == "trained"
    assert seen[0].base_model == "my/encoder"


def test_train_spec_reads_the_specs_data_into_the_specs_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[Any, Path, dict[str, Any]]] = []

    def fake_train_guard(examples: Any, out_dir: Path, config: Any, **kwargs: Any) -> Any:
        calls.append((examples, out_dir, kwargs))
        return "trained"

    monkeypatch.setattr(topicguard.training.guard, "train_guard", fake_train_guard)
    spec = load_spec(bundled_example())
    assert train_spec(spec) == "trained"
    examples, out_dir, kwargs = calls[0]
    assert out_dir == default_out_dir(spec) == Path("runs") / spec.name
    assert kwargs["data_files"] == [str(p) for p in spec.train_paths()]
    assert len(examples) > 1000 and kwargs["spec"] is spec

    own = tmp_path / "mine.jsonl"
    own.write_text('{"text": "where is my parcel", "label": true}\n')
    train_spec(spec, data=[own], out_dir=tmp_path / "out")
    examples, out_dir, kwargs = calls[1]
    assert (len(examples), out_dir, kwargs["data_files"]) == (1, tmp_path / "out", [str(own)])

    empty = spec.model_copy(update={"data": spec.data.model_copy(update={"train": []})})
    with pytest.raises(DataError, match="lists no training data: pass --data FILE"):
        train_spec(empty)
