"""The LLM stages: generate and review."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from topicguard.spec import LLMEndpoint

from topicguard.cli._common import app, clean_errors, logger, require_jsonl, usage_error
from topicguard.llm import DEFAULT_CACHE_DIR, LLMSettings
from topicguard.review import REVIEW_TIMEOUT

BaseUrl = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        envvar="TOPICGUARD_BASE_URL",
        help="OpenAI-compatible endpoint (default: the spec's llm.base_url)",
    ),
]
Concurrency = Annotated[int, typer.Option(min=1, help="requests in flight at once")]
CacheDir = Annotated[
    Path, typer.Option(file_okay=False, help="answers cached here; reruns pay only what is new")
]
Timeout = Annotated[float, typer.Option(min=1.0, help="seconds per request")]
MaxRetries = Annotated[int, typer.Option(min=0, help="retries on 429, 5xx and timeouts")]
MaxTokens = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, help="longest answer in tokens (default: the server's limit)"),
]
Price = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, help="price per million tokens, to print the cost"),
]
Resume = Annotated[bool, typer.Option(help="continue an interrupted run into the same --out")]
Overwrite = Annotated[bool, typer.Option(help="replace an existing --out")]


def _llm_settings(
    endpoint: LLMEndpoint,
    base_url: str | None,
    model: str,
    *,
    concurrency: int,
    timeout: float,
    max_retries: int,
    cache_dir: Path,
    price_input: float | None,
    price_output: float | None,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> LLMSettings:
    """LLM settings from the command-line options, the spec's ``llm`` section filling gaps."""
    from topicguard.llm import LLMSettings

    settings = LLMSettings(
        base_url=base_url or endpoint.base_url,
        model=model,
        api_key_env=endpoint.api_key_env,
        concurrency=concurrency,
        timeout=timeout,
        max_retries=max_retries,
        cache_dir=cache_dir,
        price_input_per_million=price_input,
        price_output_per_million=price_output,
        max_tokens=max_tokens,
    )
    if temperature is not None:
        settings.temperature = temperature
    return settings


def _print_mode(settings: LLMSettings, mode: str) -> None:
    """Which structured output the endpoint took: told once at the start of a run, and
    again if it steps down later."""
    from topicguard.llm import describe_mode

    typer.echo(
        f"{settings.model} at {settings.base_url}: structured output by {describe_mode(mode)}"
    )


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    require_jsonl(out, "--out")
    if out.exists() and not (resume or overwrite):
        raise usage_error(f"{out} already exists: pass --resume to continue it or --overwrite")
    if out.exists() and overwrite and not resume:
        logger.info("%s will be replaced", out)


@app.command()
def generate(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="guard.yaml")],
    n: Annotated[int, typer.Option("--n", min=1, help="unique queries to write")],
    out: Annotated[Path, typer.Option(dir_okay=False, help="JSONL file to write")],
    base_url: BaseUrl = None,
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(envvar="TOPICGUARD_MODEL", help="generator model (default: the spec's)"),
    ] = None,
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=2, help="queries per call (default: the spec's, 50)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed for the batch slices")] = 0,
    concurrency: Concurrency = LLMSettings.concurrency,
    timeout: Timeout = LLMSettings.timeout,
    max_retries: MaxRetries = LLMSettings.max_retries,
    max_tokens: MaxTokens = None,
    cache_dir: CacheDir = DEFAULT_CACHE_DIR,
    price_input: Price = None,
    price_output: Price = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Have an LLM write on- and off-topic queries for a spec (key from the environment)."""
    with clean_errors():
        from topicguard.generate import generate_rows
        from topicguard.spec import load_spec

        guard_spec = load_spec(spec)
        _check_out(out, resume, overwrite)
        settings = _llm_settings(
            guard_spec.llm,
            base_url,
            model or guard_spec.llm.generator_model,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
            cache_dir=cache_dir,
            price_input=price_input,
            price_output=price_output,
            max_tokens=max_tokens,
            temperature=1.0,
        )
        rows, stats, usage = generate_rows(
            guard_spec,
            settings,
            n,
            out=out,
            batch_size=batch_size,
            seed=seed,
            resume=resume,
            on_mode=_print_mode,
        )
        on_topic = sum(bool(r["label"]) for r in rows)
        typer.echo(
            f"{out}: {len(rows)} queries ({on_topic} on topic, {len(rows) - on_topic} off) "
            f"from {stats.batches} batches; {stats.failed_batches} failed, "
            f"{stats.unparsed_batches} unparsed, {stats.duplicates_dropped} duplicates dropped\n"
            f"usage: {usage.summary()}"
        )


@app.command()
def review(
    data: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="queries to judge")],
    spec: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="guard.yaml")],
    out: Annotated[Path, typer.Option(dir_okay=False, help="JSONL file to write")],
    base_url: BaseUrl = None,
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(envvar="TOPICGUARD_JUDGE_MODEL", help="judge model (default: the spec's)"),
    ] = None,
    judges: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="several judge models, comma-separated: majority vote"),
    ] = None,
    votes: Annotated[int, typer.Option(min=1, help="samples per judge: majority vote")] = 1,
    concurrency: Concurrency = LLMSettings.concurrency,
    timeout: Timeout = REVIEW_TIMEOUT,
    max_retries: MaxRetries = LLMSettings.max_retries,
    max_tokens: MaxTokens = None,
    cache_dir: CacheDir = DEFAULT_CACHE_DIR,
    price_input: Price = None,
    price_output: Price = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Have an LLM judge every query against the spec's policy; its verdict becomes `label`."""
    with clean_errors():
        from topicguard.data import read_rows
        from topicguard.review import review_rows
        from topicguard.spec import load_spec

        guard_spec = load_spec(spec)
        _check_out(out, resume, overwrite)
        rows = read_rows(data)
        endpoint = guard_spec.llm
        chosen = judges or model or endpoint.judge_model
        models = [m.strip() for m in chosen.split(",") if m.strip()]
        if not models:
            raise usage_error("--judges names no model: give a comma-separated list")
        settings = [
            _llm_settings(
                endpoint,
                base_url,
                m,
                concurrency=concurrency,
                timeout=timeout,
                max_retries=max_retries,
                cache_dir=cache_dir,
                price_input=price_input,
                price_output=price_output,
                max_tokens=max_tokens,
            )
            for m in models
        ]
        reviewed, summary, usages = review_rows(
            rows, guard_spec, settings, votes=votes, out=out, on_mode=_print_mode
        )
        typer.echo(
            f"{out}: {summary.n} rows judged: {summary.verdicts['on_topic']} on topic, "
            f"{summary.verdicts['off_topic']} off topic, {summary.unparsed} without a verdict "
            f"(left out of training); {summary.disagreements} disagree with the generator"
        )
        for category, counts in summary.by_category.items():
            if counts["disagreements"] or counts["unparsed"]:
                typer.echo(
                    f"  {category}: {counts['disagreements']} of {counts['n']} disagree, "
                    f"{counts['unparsed']} without a verdict"
                )
        for name, usage in zip(models, usages, strict=True):
            typer.echo(f"usage {name}: {usage.summary()}")
        if summary.failed:
            typer.echo(
                f"error: {summary.failed} rows got no answer from the API (kept with an empty "
                "label and the error in review_votes); rerun with --resume",
                err=True,
            )
            raise typer.Exit(1)
