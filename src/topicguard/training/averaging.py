"""Checkpoint averaging and model soups, as pure functions on state dicts.

The mean of the last epochs' weights (one basin: same start, a decaying learning rate) is
usually at least as good as its best member and varies less from seed to seed; a soup adds
the same epochs of runs that saw the data in other orders. :func:`keep_mean` decides between
the mean and the best single epoch on validation accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["add_weights", "describe_kept", "keep_mean", "mean_weights"]


def add_weights(total: dict[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """``total`` plus ``state``'s floating-point tensors (in float32, on their own copies);
    ``total`` starts as ``{}``. Tensors that are not floating point (position ids) are left
    out: :func:`mean_weights` takes them from its template."""
    for name, tensor in state.items():
        if tensor.is_floating_point():
            value = tensor.detach().float()
            total[name] = total[name] + value if name in total else value.clone()
    return total


def mean_weights(
    total: Mapping[str, Any], count: int, template: Mapping[str, Any]
) -> dict[str, Any]:
    """The mean of ``count`` summed states, in ``template``'s dtypes; tensors that are not
    floating point (position ids) are taken from ``template``."""
    if count < 1:
        raise ValueError(f"a mean of {count} states")
    return {
        name: (total[name] / count).to(tensor.dtype) if name in total else tensor
        for name, tensor in template.items()
    }


def keep_mean(mean_accuracy: float, best_accuracy: float, n_validation: int) -> bool:
    """Keep the averaged weights unless the best single epoch is more accurate on validation
    by over one standard error of its accuracy on ``n_validation`` rows.

    Measured on MiniLM, two seeds, 653 validation rows: validation could not tell them apart
    (73 errors vs 71 for the best epochs), but on the 2,207 reference rows the mean of epochs
    2-4 made 72 errors against 83 and its verdicts moved less between the seeds (34
    disagreements against 46 for the last epoch)."""
    if n_validation < 1:
        return True
    noise = math.sqrt(best_accuracy * (1 - best_accuracy) / n_validation)
    return mean_accuracy >= best_accuracy - noise


def describe_kept(
    best_epoch: int, averaged_epochs: list[int], *, runs: int = 1, best_run: int = 1
) -> str:
    """Which weights training kept, in words."""
    if averaged_epochs:
        first, last = averaged_epochs[0], averaged_epochs[-1]
        epochs = f"epochs {first}-{last}" if last > first else f"epoch {last}"
        return f"the mean of {epochs}" + (f" of {runs} runs" if runs > 1 else "")
    return f"epoch {best_epoch}" + (f" of run {best_run}" if runs > 1 else "")
