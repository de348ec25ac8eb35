"""The ``topicguard`` command: parse, call a stage's Python API, print. Nothing more.

Results go to stdout, logs and errors to stderr. Any bad input ends with one line on
stderr and a non-zero exit code. One module per command group; each registers its
commands on the shared Typer ``app`` when imported.
"""

from __future__ import annotations

import importlib
import sys

import typer

from topicguard._exceptions import TopicGuardError
from topicguard.cli._common import app

# Importing a command module registers its commands; --help lists them in this order.
for _module in ("model", "llm", "data", "feedback"):
    importlib.import_module(f"topicguard.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point: usage errors, too, end in one line on stderr."""
    try:
        result = app(standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except TopicGuardError as exc:  # raised outside a command body
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        # Typer's (or click's) usage errors: print their message as one line, not a panel
        if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
            typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
            sys.exit(0)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = " ".join(str(exc.format_message()).split())
            typer.echo(f"error: {message}", err=True)
            sys.exit(int(exc.exit_code))
        raise
