"""The ``topicguard`` command: parse, call a stage's Python API, print. Nothing more.

Results go to stdout, logs and errors to stderr. Any bad input ends with one line on
stderr and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from topicguard._exceptions import TopicGuardError
from topicguard.train import TrainConfig

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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
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


@app.command()
def train(
    spec: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(exists=True, dir_okay=False, help="guard.yaml (default: bundled example)"),
    ] = None,
    data: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option("--data", exists=True, dir_okay=False, help="training data (repeatable)"),
    ] = None,
    base_model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="encoder to fine-tune: Hugging Face id or local folder"),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="model folder to write (default: runs/<spec name>)"),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="passes over the data")] = DEFAULTS.epochs,
    seed: Annotated[int, typer.Option(help="random seed")] = DEFAULTS.seed,
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="peak learning rate")
    ] = DEFAULTS.learning_rate,
    batch_size: Annotated[
        int, typer.Option(min=1, help="training batch size")
    ] = DEFAULTS.batch_size,
    max_length: Annotated[int, typer.Option(min=8, help="tokens per text")] = DEFAULTS.max_length,
    validation_size: Annotated[float, typer.Option(help="share held out for validation")] = (
        DEFAULTS.validation_size
    ),
    label_column: LabelColumn = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing model folder")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="run model code from the hub")] = False,
) -> None:
    """Fine-tune an encoder into a guard. With no arguments: the bundled logistics example."""
    with _clean_errors():
        from topicguard.data import read_datasets
        from topicguard.models import DEFAULT_BASE_MODEL
        from topicguard.spec import bundled_example, load_spec
        from topicguard.train import train as run_training

        guard_spec = load_spec(spec or bundled_example())
        paths = list(data) if data else guard_spec.train_paths()
        if not paths:
            raise _usage_error(f"{guard_spec.source_path} lists no training data: pass --data FILE")
        examples = read_datasets(paths, label_column=label_column)
        config = TrainConfig(
            base_model=base_model or guard_spec.base_model or DEFAULT_BASE_MODEL,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_length=max_length,
            validation_size=validation_size,
            seed=seed,
            trust_remote_code=trust_remote_code,
        )
        out_dir = out or Path("runs") / guard_spec.name
        logger.info(
            "training %s on %d queries from %s",
            config.base_model,
            len(examples),
            ", ".join(str(p) for p in paths),
        )
        result = run_training(
            examples,
            out_dir,
            config,
            spec=guard_spec,
            overwrite=overwrite,
            data_files=[str(p) for p in paths],
        )
        m = result.validation_metrics
        typer.echo(
            f"model: {result.model_dir}\n"
            f"trained on {result.n_train} queries in {result.train_seconds:.0f} s, kept epoch "
            f"{result.best_epoch}; threshold {result.threshold:.3f}\n"
            f"validation ({result.n_validation} queries): accuracy {m['accuracy']:.4f}, "
            f"F1 {m['f1']:.4f}, false blocks {m['false_block_rate']:.2%}, "
            f"leaks {m['leak_rate']:.2%}"
        )


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="model folder written by `topicguard train`")],
    data: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help="labelled datasets")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    report: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(file_okay=False, help="write metrics.json, errors.csv, report.md, plots"),
    ] = None,
    label_column: LabelColumn = None,
    backend: Annotated[str, typer.Option(help="auto, torch, onnx or onnx-int8")] = "auto",
) -> None:
    """Measure a guard on labelled data: F1, false-block rate, leak rate, per category."""
    with _clean_errors():
        from topicguard.data import read_datasets
        from topicguard.evaluate import evaluate as run_evaluation
        from topicguard.runtime import TopicGuard

        guard = TopicGuard.load(model, backend=backend)
        examples = read_datasets(data, label_column=label_column)
        evaluation = run_evaluation(guard, examples)
        summary = evaluation.to_dict()
        if report is not None:
            from topicguard.report import write_report

            write_report(
                evaluation, report, title=f"{model.name} on {', '.join(p.name for p in data)}"
            )
            logger.info("report written to %s", report)
        if as_json:
            typer.echo(json.dumps(summary))
            return
        _print_metrics(summary)
        if report is not None:
            typer.echo(f"report: {report / 'report.md'}")


@app.command()
def classify(
    model: Annotated[Path, typer.Argument(help="model folder written by `topicguard train`")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="texts to judge")] = None,  # noqa: UP045
    input_file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--input",
            exists=True,
            dir_okay=False,
            help=".txt (one text per line) or a dataset with a text column",
        ),
    ] = None,
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(dir_okay=False, help="write JSON lines here instead of stdout"),
    ] = None,
    threads: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="CPU threads for inference"),
    ] = None,
    backend: Annotated[str, typer.Option(help="auto, torch, onnx or onnx-int8")] = "auto",
) -> None:
    """Judge texts: one JSON line each with text, label, score (on topic) and allowed."""
    with _clean_errors():
        from topicguard.data import read_texts, write_jsonl
        from topicguard.runtime import TopicGuard

        items = list(texts or [])
        for i, text in enumerate(items, start=1):
            if not text.strip():
                raise _usage_error(f"text {i} is empty: give the guard something to judge")
        if input_file is not None:
            items += read_texts(input_file)
        if not items:
            raise _usage_error("nothing to classify: pass texts or --input FILE")
        guard = TopicGuard.load(model, backend=backend, threads=threads)
        rows = [v.to_dict() for v in guard.classify(items)]
        if output is not None:
            _require_jsonl(output, "--output")
            write_jsonl(output, rows)
            logger.info("%d verdicts written to %s", len(rows), output)
        else:
            for row in rows:
                typer.echo(json.dumps(row, ensure_ascii=False))


ModelDir = Annotated[Path, typer.Argument(help="model folder written by `topicguard train`")]


@app.command()
def export(
    model: ModelDir,
    int8: Annotated[
        bool, typer.Option("--int8", help="also write a dynamically quantised copy")
    ] = (False),
) -> None:
    """Export to ONNX under MODEL/onnx/, verified against PyTorch before it counts."""
    with _clean_errors():
        from topicguard.export import FP32_ATOL, export_onnx

        report = export_onnx(model, int8=int8)
        typer.echo(
            f"{report.path}: same label as PyTorch on {report.n_checked} texts, max logit "
            f"difference {report.fp32_max_abs_diff:.1e} (tolerance {FP32_ATOL})"
        )
        if report.int8_path is not None:
            typer.echo(
                f"{report.int8_path}: label agreement {report.int8_label_agreement:.2%}, max "
                f"logit difference {report.int8_max_abs_diff:.2f}, first "
                f"{report.int8_float_layers} encoder layers kept in float"
            )


@app.command()
def bench(
    model: ModelDir,
    backend: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="torch, onnx or onnx-int8 (repeatable; default: all present)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    queries: Annotated[int, typer.Option(min=10, help="single queries to time")] = 300,
    threads: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="CPU threads"),
    ] = None,
) -> None:
    """Latency (p50/p95/p99) and throughput of each backend and of transformers.pipeline."""
    with _clean_errors():
        from topicguard.bench import benchmark
        from topicguard.runtime import BACKENDS, read_metadata

        read_metadata(model)
        for name in backend or []:
            if name not in BACKENDS[1:]:
                raise _usage_error(f"unknown backend {name!r}: use torch, onnx or onnx-int8")
        result = benchmark(model, backends=backend, single_queries=queries, threads=threads)
        if as_json:
            typer.echo(json.dumps(result))
            return
        typer.echo(
            f"{result['n_single']} single queries, {result['n_batch']} in batches of "
            f"{result['batch_size']}, {result['threads']} threads"
        )
        typer.echo(
            f"{'backend':<10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'queries/s':>10} {'speed-up':>9}"
        )
        for name, r in result["backends"].items():
            typer.echo(
                f"{name:<10} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['throughput_qps']:>10.0f} {r.get('speedup_vs_pipeline', 1):>8.1f}x"
            )


@app.command()
def serve(
    model: ModelDir,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8000,
    backend: Annotated[str, typer.Option(help="auto, torch, onnx or onnx-int8")] = "auto",
    threads: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="CPU threads for inference"),
    ] = None,
    api_key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            envvar="TOPICGUARD_SERVE_API_KEY",
            show_default=False,
            help="require 'Authorization: Bearer KEY' (better: set the variable)",
        ),
    ] = None,
    max_texts: Annotated[int, typer.Option(min=1, help="texts per request")] = 64,
    max_chars: Annotated[int, typer.Option(min=1, help="characters per text")] = 4000,
) -> None:
    """Serve the guard over HTTP: POST /v1/classify, /healthz, /readyz, /metrics."""
    with _clean_errors():
        from topicguard.runtime import BACKENDS, read_metadata
        from topicguard.serve import ServeConfig, run

        read_metadata(model)
        if backend not in BACKENDS:
            raise _usage_error(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        config = ServeConfig(
            model_dir=model,
            backend=backend,
            threads=threads,
            api_key=api_key,
            max_texts=max_texts,
            max_chars=max_chars,
        )
        logger.info("listening on http://%s:%d (auth %s)", host, port, "on" if api_key else "off")
        from topicguard.runtime import TopicGuard

        guard = TopicGuard.load(model, backend=backend, threads=threads)  # errors: one line
        run(config, host=host, port=port, guard=guard)


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
Price = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, help="price per million tokens, to print the cost"),
]
Resume = Annotated[bool, typer.Option(help="continue an interrupted run into the same --out")]
Overwrite = Annotated[bool, typer.Option(help="replace an existing --out")]


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    _require_jsonl(out, "--out")
    if out.exists() and not (resume or overwrite):
        raise _usage_error(f"{out} already exists: pass --resume to continue it or --overwrite")
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
    concurrency: Concurrency = 8,
    timeout: Timeout = 120.0,
    max_retries: MaxRetries = 6,
    cache_dir: CacheDir = Path(".topicguard-cache"),
    price_input: Price = None,
    price_output: Price = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Have an LLM write on- and off-topic queries for a spec (key from the environment)."""
    with _clean_errors():
        from topicguard.generate import generate_rows
        from topicguard.llm import LLMSettings
        from topicguard.spec import load_spec

        guard_spec = load_spec(spec)
        _check_out(out, resume, overwrite)
        endpoint = guard_spec.llm
        settings = LLMSettings(
            base_url=base_url or endpoint.base_url,
            model=model or endpoint.generator_model,
            api_key_env=endpoint.api_key_env,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
            cache_dir=cache_dir,
            temperature=1.0,
            price_input_per_million=price_input,
            price_output_per_million=price_output,
        )
        rows, stats, usage = generate_rows(
            guard_spec, settings, n, out=out, batch_size=batch_size, seed=seed, resume=resume
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
    concurrency: Concurrency = 8,
    timeout: Timeout = 300.0,
    max_retries: MaxRetries = 6,
    cache_dir: CacheDir = Path(".topicguard-cache"),
    price_input: Price = None,
    price_output: Price = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Have an LLM judge every query against the spec's policy; its verdict becomes `label`."""
    with _clean_errors():
        from topicguard.data import read_rows
        from topicguard.llm import LLMSettings
        from topicguard.review import review_rows
        from topicguard.spec import load_spec

        guard_spec = load_spec(spec)
        _check_out(out, resume, overwrite)
        rows = read_rows(data)
        endpoint = guard_spec.llm
        chosen = judges or model or endpoint.judge_model
        models = [m.strip() for m in chosen.split(",") if m.strip()]
        if not models:
            raise _usage_error("--judges names no model: give a comma-separated list")
        settings = [
            LLMSettings(
                base_url=base_url or endpoint.base_url,
                model=m,
                api_key_env=endpoint.api_key_env,
                concurrency=concurrency,
                timeout=timeout,
                max_retries=max_retries,
                cache_dir=cache_dir,
                price_input_per_million=price_input,
                price_output_per_million=price_output,
            )
            for m in models
        ]
        reviewed, summary, usages = review_rows(rows, guard_spec, settings, votes=votes, out=out)
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


data_app = typer.Typer(
    help="Inspect and split labelled datasets.", no_args_is_help=True, add_completion=False
)
app.add_typer(data_app, name="data")

Threshold = Annotated[
    float,
    typer.Option(min=0.01, max=1.0, help="near-duplicate similarity (character 4-gram Jaccard)"),
]


@data_app.command("check")
def data_check(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="datasets")],
    threshold: Threshold = 0.8,
    strict: Annotated[
        bool, typer.Option(help="exit 1 when duplicates or conflicting labels exist")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    label_column: LabelColumn = None,
) -> None:
    """Counts, duplicates, near-duplicates, conflicting labels and lengths of datasets."""
    with _clean_errors():
        from topicguard.data import read_datasets
        from topicguard.quality import check_examples

        examples = read_datasets(files, label_column=label_column, strict=True)
        report = check_examples(examples, threshold=threshold)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        else:
            _print_data_report(report)
        if strict and not report.clean:
            typer.echo(
                f"error: {len(report.exact_duplicates)} duplicate groups, "
                f"{len(report.near_duplicates)} near-duplicate pairs, "
                f"{len(report.conflicts)} conflicting labels (--strict)",
                err=True,
            )
            raise typer.Exit(1)


@data_app.command("split")
def data_split(
    file: ExistingFile,
    out: Annotated[Path, typer.Option(file_okay=False, help="folder for train/test.jsonl")],
    test_size: Annotated[float, typer.Option(help="share of rows in test.jsonl")] = 0.2,
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
    threshold: Threshold = 0.8,
    label_column: LabelColumn = None,
) -> None:
    """Split a dataset into train.jsonl and test.jsonl, near-duplicate clusters kept whole."""
    with _clean_errors():
        from topicguard.data import read_dataset, write_jsonl
        from topicguard.leakage import split_examples

        examples = read_dataset(file, label_column=label_column, strict=True)
        train_rows, test_rows = split_examples(
            examples, test_size=test_size, seed=seed, threshold=threshold
        )
        for name, rows in (("train.jsonl", train_rows), ("test.jsonl", test_rows)):
            write_jsonl(out / name, (e.to_dict() for e in rows))
        typer.echo(
            f"{out / 'train.jsonl'}: {len(train_rows)} rows\n{out / 'test.jsonl'}: "
            f"{len(test_rows)} rows (near-duplicate clusters kept on one side)"
        )


def _require_jsonl(path: Path, option: str) -> None:
    if path.suffix.lower() != ".jsonl":
        raise _usage_error(f"{option} {path}: this writes JSON Lines, so name it *.jsonl")


def _usage_error(message: str) -> TopicGuardError:
    from topicguard._exceptions import DataError

    return DataError(message)


def _print_metrics(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from topicguard.metrics import HEADLINE_METRICS

    table = Table(title=f"{summary['n']} queries, threshold {summary['threshold']:.3f}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in HEADLINE_METRICS:
        value = summary[key]
        table.add_row(key, "n/a" if value is None else f"{value:.4f}")
    console = Console()
    console.print(table)
    if "categories" in summary:
        per = Table(title="per category")
        for column in ("category", "n", "errors", "false blocks", "leaks"):
            per.add_column(column, justify="left" if column == "category" else "right")
        for name, g in summary["categories"].items():
            per.add_row(
                name, str(g["n"]), str(g["errors"]), str(g["false_blocks"]), str(g["leaks"])
            )
        console.print(per)


def _print_data_report(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    labels = report.labels
    console.print(
        f"{report.n} rows: {labels['on_topic']} on topic, {labels['off_topic']} off topic; "
        f"languages: {', '.join(f'{k} {v}' for k, v in report.languages.items())}"
    )
    table = Table(title="per category")
    for column in ("category", "on topic", "off topic"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for name, counts in report.categories.items():
        table.add_row(name, str(counts["on_topic"]), str(counts["off_topic"]))
    console.print(table)
    lengths = report.lengths
    console.print(
        f"length in characters: min {lengths['chars_min']:.0f}, median "
        f"{lengths['chars_median']:.0f}, p95 {lengths['chars_p95']:.0f}, max "
        f"{lengths['chars_max']:.0f}; 1-3 words: {lengths['share_up_to_3_words']:.1%}, "
        f"over 30 words: {lengths['share_over_30_words']:.1%}"
    )
    console.print(f"exact duplicate groups: {len(report.exact_duplicates)}")
    for group in report.exact_duplicates[:5]:
        console.print(
            f"  rows {', '.join(str(r['row']) for r in group)}: {group[0]['text']!r}", markup=False
        )
    console.print(f"near-duplicate pairs (>= {report.threshold}): {len(report.near_duplicates)}")
    for pair in report.near_duplicates[:5]:
        console.print(
            f"  {pair['similarity']:.2f} row {pair['first']['row']} {pair['first']['text']!r} ~ "
            f"row {pair['second']['row']} {pair['second']['text']!r}",
            markup=False,
        )
    console.print(f"texts with conflicting labels: {len(report.conflicts)}")
    for group in report.conflicts[:5]:
        console.print(
            "  "
            + "; ".join(f"row {r['row']} {r['label']}" for r in group)
            + f": {group[0]['text']!r}",
            markup=False,
        )


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
