"""`topicguard feedback`: choose what in decision logs is worth reviewing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from topicguard.cli._common import app, clean_errors, logger, require_jsonl, usage_error


@app.command()
def feedback(
    logs: Annotated[
        list[Path],
        typer.Argument(
            dir_okay=False,
            help="decision logs written by `serve --log FILE --log-texts` (rotated copies "
            "FILE.1, FILE.2 ... are read too)",
        ),
    ],
    out: Annotated[Path, typer.Option(dir_okay=False, help="JSONL file to write")],
    unsure: Annotated[
        bool, typer.Option("--unsure", help="only texts scored near the threshold")
    ] = False,
    blocked: Annotated[bool, typer.Option("--blocked", help="only blocked texts")] = False,
    sample: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="at most this many rows, the most worth a look first"),
    ] = None,
    band: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            metavar="LOW:HIGH",
            help="scores counted as unsure (default: within 0.25 of the threshold the log "
            "recorded, else 0.25:0.75)",
        ),
    ] = None,
) -> None:
    """Select logged texts to review: unsure first, then blocked, most frequent first,
    near-duplicates collapsed. The file feeds `topicguard review` or a person; the reviewed
    file goes to `topicguard train --data base.jsonl --data reviewed.jsonl`."""
    with clean_errors():
        from topicguard.decisions import read_decisions
        from topicguard.feedback import select_for_review, write_feedback

        require_jsonl(out, "--out")
        decisions = read_decisions(logs)
        rows = select_for_review(
            decisions,
            unsure=unsure or not blocked,
            blocked=blocked or not unsure,
            band=_band(band),
            sample=sample,
        )
        write_feedback(rows, out)
        n_unsure = sum(r.reason == "unsure" for r in rows)
        logger.info("read %d decisions from %s", len(decisions), ", ".join(map(str, logs)))
        typer.echo(
            f"{out}: {len(rows)} texts to review ({n_unsure} unsure, {len(rows) - n_unsure} "
            f"blocked) standing for {sum(r.count for r in rows)} of {len(decisions)} decisions"
        )


def _band(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(x) for x in value.split(":"))
    except ValueError:
        raise usage_error(f"--band {value}: write it LOW:HIGH, e.g. 0.3:0.7") from None
    if not 0 <= low < high <= 1:
        raise usage_error(f"--band {value}: needs 0 <= LOW < HIGH <= 1")
    return low, high
