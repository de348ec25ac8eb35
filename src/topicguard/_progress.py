"""One rule for progress bars: shown only on a terminal and when the caller's logger is at
INFO or lower (so ``-q`` and pipes stay quiet)."""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(
    total: int, description: str, *, logger: logging.Logger, unit: str, **kwargs: Any
) -> Any:
    """A tqdm bar, disabled when stderr is not a terminal or ``logger`` is quieter than INFO."""
    from tqdm.auto import tqdm

    quiet = not sys.stderr.isatty() or not logger.isEnabledFor(logging.INFO)
    return tqdm(total=total, desc=description, unit=unit, disable=quiet, **kwargs)
