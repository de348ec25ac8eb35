"""What every command shares: the Typer app, logging set-up, argument types, and the rule
that our errors end as one line on stderr with exit code 1."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from topicguard._exceptions import DataError, TopicGuardError
from topicguard.training import TrainConfig

app = typer.Typer(
    name="topicguard",
    help="Train, evaluate and run a small, fast topical guardrail for an LLM chatbot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

logger = logging.getLogger("topicguard")
DEFAULTS = TrainConfig()

ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]
LabelColumn = Annotated[
    Optional[str],  # noqa: UP045 - Typer needs Optional on Python 3.10
    typer.Option("--label-column", help="column holding the label (default: label or is_relevant)"),
]


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show debug logs")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and errors")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message, so that a program
    (or test runner) that swaps stderr after a command has run gets no "closed file" errors."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    """Turn our errors into one line on stderr and exit code 1."""
    try:
        yield
    except TopicGuardError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # an output place that cannot be written, a full disk, ...
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None


TargetFalseBlock = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        help="threshold objective: fewest leaks with at most this share of on-topic "
        "queries blocked, e.g. 0.01",
        rich_help_panel="Operating point",
    ),
]
MaxF1 = Annotated[
    bool,
    typer.Option(help="threshold objective: best F1", rich_help_panel="Operating point"),
]
CostRatio = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        help="threshold objective: fewest errors when one false block costs this many leaks",
        rich_help_panel="Operating point",
    ),
]

ModelDir = Annotated[Path, typer.Argument(help="model folder written by `topicguard train`")]
SecondOpinion = Annotated[
    bool,
    typer.Option(
        "--second-opinion/--no-second-opinion",
        help="let a routed guard's multilingual model weigh in on texts its fast model is "
        "unsure of (off: steadier tail latency, slightly lower accuracy)",
    ),
]


def require_jsonl(path: Path, option: str) -> None:
    if path.suffix.lower() != ".jsonl":
        raise usage_error(f"{option} {path}: this writes JSON Lines, so name it *.jsonl")


def usage_error(message: str) -> TopicGuardError:
    return DataError(message)
