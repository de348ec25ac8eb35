"""Commands around a model folder: train, calibrate, evaluate, classify, export, bench, and
the two servers, serve and proxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from topicguard._http import DEFAULT_HOST, DEFAULT_PORT
from topicguard.cli._common import (
    DEFAULTS,
    CostRatio,
    LabelColumn,
    MaxF1,
    ModelDir,
    SecondOpinion,
    TargetFalseBlock,
    app,
    clean_errors,
    logger,
    require_jsonl,
    usage_error,
)
from topicguard.decisions import DEFAULT_BACKUPS, DEFAULT_MAX_MB
from topicguard.proxy import ProxyConfig
from topicguard.serve import ServeConfig
from topicguard.training import PRESETS, TrainConfig
from topicguard.training import field_help as _field_help


def _default(name: str) -> str:
    """The default preset's value of a TrainConfig field, for a help text."""
    value = getattr(DEFAULTS, name)
    if name == "multilingual_epochs" and not value:
        return " (default: as --epochs)"
    if isinstance(value, bool):
        return f" (default: {'on' if value else 'off'})"
    if isinstance(value, list):
        value = ",".join(value)
    return f" (default: {value or 'all'})"


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
        typer.Option(help=_field_help("base_model")),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="model folder to write (default: runs/<spec name>)"),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            help=f"training recipe: {', '.join(PRESETS)}. 'default' for the guard you ship, "
            "'light' for a quicker one with a smaller multilingual model (less accurate, most of "
            "all outside English), 'fast' for iterating on data (a few minutes); options below "
            "override it"
        ),
    ] = "default",
    epochs: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help=_field_help("epochs") + _default("epochs")),
    ] = None,
    average_last: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help=_field_help("average_last") + _default("average_last")),
    ] = None,
    soup: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help=_field_help("soup") + _default("soup")),
    ] = None,
    seed: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help=_field_help("seed") + _default("seed")),
    ] = None,
    learning_rate: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(min=0.0, help=_field_help("learning_rate") + _default("learning_rate")),
    ] = None,
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help=_field_help("batch_size") + _default("batch_size")),
    ] = None,
    max_length: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=8, help=_field_help("max_length") + _default("max_length")),
    ] = None,
    validation_size: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help=_field_help("validation_size") + _default("validation_size")),
    ] = None,
    label_column: LabelColumn = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing model folder")] = False,
    trust_remote_code: Annotated[
        bool, typer.Option(help=_field_help("trust_remote_code"))
    ] = DEFAULTS.trust_remote_code,
    fast_languages: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="comma-separated " + _field_help("fast_languages") + _default("fast_languages")
        ),
    ] = None,
    multilingual_repeat: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            min=1, help=_field_help("multilingual_repeat") + _default("multilingual_repeat")
        ),
    ] = None,
    multilingual_layers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help=_field_help("multilingual_layers") + _default("multilingual_layers")),
    ] = None,
    multilingual_frozen_layers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help=_field_help("multilingual_frozen_layers") + _default("multilingual_frozen_layers")
        ),
    ] = None,
    multilingual_epochs: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help=_field_help("multilingual_epochs") + _default("multilingual_epochs")),
    ] = None,
    multilingual_vocabulary: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help=_field_help("multilingual_vocabulary") + _default("multilingual_vocabulary")
        ),
    ] = None,
    layers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help=_field_help("layers")),
    ] = None,
    frozen_layers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help=_field_help("frozen_layers")),
    ] = None,
    precision: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help=_field_help("precision") + _default("precision")),
    ] = None,
    augment: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--augment/--no-augment", help=_field_help("augment") + _default("augment")),
    ] = None,
    augment_ratio: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help=_field_help("augment_ratio") + _default("augment_ratio")),
    ] = None,
    target_false_block: TargetFalseBlock = None,
    max_f1: MaxF1 = False,
    cost_ratio: CostRatio = None,
) -> None:
    """Fine-tune an encoder into a guard. With no arguments: the bundled logistics example."""
    with clean_errors():
        from topicguard.calibrate import Objective
        from topicguard.spec import bundled_example, load_spec
        from topicguard.training import train_spec

        objective = Objective.from_options(
            target_false_block=target_false_block, max_f1=max_f1, cost_ratio=cost_ratio
        )
        guard_spec = load_spec(spec or bundled_example())
        config = TrainConfig.from_preset(
            preset,
            base_model=base_model,
            epochs=epochs,
            average_last=average_last,
            soup=soup,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_length=max_length,
            validation_size=validation_size,
            seed=seed,
            trust_remote_code=trust_remote_code,
            fast_languages=(
                [x.strip() for x in fast_languages.split(",") if x.strip()]
                if fast_languages is not None
                else None
            ),
            multilingual_repeat=multilingual_repeat,
            multilingual_layers=multilingual_layers,
            multilingual_frozen_layers=multilingual_frozen_layers,
            multilingual_epochs=multilingual_epochs,
            multilingual_vocabulary=multilingual_vocabulary,
            layers=layers,
            frozen_layers=frozen_layers,
            precision=precision,
            augment=augment,
            augment_ratio=augment_ratio,
        )
        config.validate()
        result = train_spec(
            guard_spec,
            config,
            data=data or (),
            out_dir=out,
            overwrite=overwrite,
            objective=objective,
            label_column=label_column,
        )
        minutes = sum(result.timings.values()) / 60
        if result.multilingual is not None:
            minutes += sum(result.multilingual.timings.values()) / 60
        typer.echo(
            f"model: {result.model_dir}\n"
            f"trained on {result.n_train} queries in {minutes:.1f} min, kept {result.kept}"
        )
        _print_calibration(result.calibration, objective, "validation")


@app.command()
def calibrate(
    model: ModelDir,
    data: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="labelled datasets (default: the validation scores kept at training)",
        ),
    ] = None,
    target_false_block: TargetFalseBlock = None,
    max_f1: MaxF1 = False,
    cost_ratio: CostRatio = None,
    label_column: LabelColumn = None,
    backend: Annotated[str, typer.Option(help="auto, torch, onnx or onnx-int8")] = "auto",
) -> None:
    """Refit score calibration and threshold for an objective: on kept validation scores or DATA."""
    with clean_errors():
        from topicguard.calibrate import Objective
        from topicguard.calibrate import calibrate as run_calibration
        from topicguard.data import read_datasets

        objective = Objective.from_options(
            target_false_block=target_false_block, max_f1=max_f1, cost_ratio=cost_ratio
        )
        examples = read_datasets(data, label_column=label_column) if data else None
        results = run_calibration(model, examples, objective, backend=backend)
        typer.echo(f"model: {model} (topicguard.json updated)")
        where = ", ".join(p.name for p in data) if data else "validation"
        for result in results:
            _print_calibration(result, objective, where)


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
    second_opinion: SecondOpinion = True,
) -> None:
    """Measure a guard on labelled data: F1, false-block rate, leak rate, per category.
    Conversation files (JSONL rows with `turns`) are measured per user turn, with and
    without the earlier turns' context."""
    with clean_errors():
        from topicguard.conversations import is_conversation_file
        from topicguard.data import read_datasets
        from topicguard.evaluate import evaluate as run_evaluation
        from topicguard.runtime import TopicGuard

        chats = [path for path in data if is_conversation_file(path)]
        if chats and len(chats) < len(data):
            raise usage_error(
                "evaluate conversation files and message datasets in separate runs "
                f"(conversations: {', '.join(p.name for p in chats)})"
            )
        guard = TopicGuard.load(model, backend=backend, second_opinion=second_opinion)
        if chats:
            _evaluate_conversations(guard, chats, as_json=as_json, report=report, model=model)
            return
        examples = read_datasets(data, label_column=label_column)
        evaluation = run_evaluation(guard, examples)
        summary = evaluation.to_dict()
        if report is not None:
            from topicguard.folder import read_bench
            from topicguard.report import write_report

            write_report(
                evaluation,
                report,
                title=f"{model.name} on {', '.join(p.name for p in data)}",
                bench=read_bench(model),
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
        Optional[str],  # noqa: UP045
        typer.Option(
            "--input",
            help=".txt (one text per line) or a dataset with a text column; or a folder or "
            "glob of .jsonl/.csv/.parquet partitions (then --output is a folder)",
        ),
    ] = None,
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="write JSON lines here instead of stdout (partitions: a folder)"),
    ] = None,
    threads: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="CPU threads for inference"),
    ] = None,
    backend: Annotated[str, typer.Option(help="auto, torch, onnx or onnx-int8")] = "auto",
    second_opinion: SecondOpinion = True,
    engine: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="partitions: local (this process) or ray (Ray Data)"),
    ] = None,
    output_format: Annotated[
        str, typer.Option(help="partitions: parquet or jsonl files in --output")
    ] = "parquet",
    actors: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="--engine ray: guard actors (default: one per CPU)"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="partitions: replace --output")] = False,
) -> None:
    """Judge texts: one JSON line each with text, label, score (on topic) and allowed."""
    with clean_errors():
        from topicguard.data import read_texts, write_jsonl
        from topicguard.runtime import TopicGuard

        if engine is not None or (input_file is not None and _is_partitions(input_file)):
            _classify_partitions(
                model,
                texts,
                input_file,
                output,
                engine or "local",
                output_format,
                threads=threads,
                backend=backend,
                second_opinion=second_opinion,
                actors=actors,
                overwrite=overwrite,
            )
            return
        items = list(texts or [])
        for i, text in enumerate(items, start=1):
            if not text.strip():
                raise usage_error(f"text {i} is empty: give the guard something to judge")
        if input_file is not None:
            items += read_texts(input_file)
        if not items:
            raise usage_error("nothing to classify: pass texts or --input FILE")
        if output is not None:
            require_jsonl(output, "--output")
        guard = TopicGuard.load(
            model, backend=backend, threads=threads, second_opinion=second_opinion
        )
        rows = [v.to_dict() for v in guard.classify(items)]
        if output is not None:
            write_jsonl(output, rows)
            logger.info("%d verdicts written to %s", len(rows), output)
        else:
            for row in rows:
                typer.echo(json.dumps(row, ensure_ascii=False))


def _is_partitions(source: str) -> bool:
    """A folder or a glob: batch scoring into an output folder."""
    return Path(source).is_dir() or any(ch in source for ch in "*?[")


def _classify_partitions(
    model: Path,
    texts: list[str] | None,
    source: str | None,
    output: Path | None,
    engine: str,
    output_format: str,
    **options: Any,
) -> None:
    from topicguard.folder import GuardMetadata
    from topicguard.score import ENGINES, OUTPUT_FORMATS, ScoreJob, find_partitions, score

    if engine not in ENGINES:
        raise usage_error(f"--engine {engine!r}: use local or ray")
    if output_format not in OUTPUT_FORMATS:
        raise usage_error(f"--output-format {output_format!r}: use parquet or jsonl")
    if texts:
        raise usage_error("pass texts or --input partitions, not both")
    if source is None or output is None:
        raise usage_error("batch scoring needs --input DIR_OR_GLOB and --output DIR")
    if output.exists() and not options["overwrite"]:
        raise usage_error(f"--output {output} exists: pick a new folder or pass --overwrite")
    GuardMetadata.read(model)  # a bad model folder is one line before any partition is read
    job = ScoreJob(
        model_dir=model,
        partitions=find_partitions(source),
        output=output,
        output_format=output_format,
        engine=engine,
        **options,
    )
    count = score(job)
    logger.info("%d verdicts in %d partitions written to %s", count, len(job.partitions), output)


@app.command()
def export(
    model: ModelDir,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="write a dynamically quantised copy (what `classify` and `serve` then run); "
            "the fp32 graph it is made from is removed unless --keep-fp32",
        ),
    ] = False,
    keep_fp32: Annotated[
        bool,
        typer.Option(
            "--keep-fp32",
            help="with --int8, keep the fp32 ONNX graph too (about twice the folder size; "
            "for --backend onnx)",
        ),
    ] = False,
) -> None:
    """Export to ONNX under MODEL/onnx/, verified against PyTorch before it counts."""
    with clean_errors():
        from topicguard.export import FP32_ATOL, export_guard

        if keep_fp32 and not int8:
            raise usage_error("--keep-fp32 goes with --int8 (without it the fp32 graph is all)")
        for report in export_guard(model, int8=int8, keep_fp32=keep_fp32):
            kept = "" if report.fp32_kept else " (checked, then removed: --keep-fp32 keeps it)"
            typer.echo(
                f"{report.path}{' (fused)' if report.fused else ''}: same label as PyTorch on "
                f"{report.n_checked} texts, max logit difference {report.fp32_max_abs_diff:.1e} "
                f"(tolerance {FP32_ATOL}){kept}"
            )
            if report.int8_path is not None:
                down = " and the FFN down-projections" if report.int8_float_down_projections else ""
                typer.echo(
                    f"{report.int8_path}: label agreement {report.int8_label_agreement:.2%}, "
                    f"max logit difference {report.int8_max_abs_diff:.2f}, first "
                    f"{report.int8_float_layers} encoder layers{down} kept in float"
                    f"{', fused graph' if report.fused else ''}"
                )
            if report.int8_skipped:
                typer.echo(f"no int8 copy of {report.path.parent.parent}: {report.int8_skipped}")


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
    save: Annotated[
        bool, typer.Option(help="keep the result in MODEL/bench.json for `evaluate --report`")
    ] = True,
    second_opinion: SecondOpinion = True,
) -> None:
    """Latency (p50/p95/p99) and throughput of each backend and of transformers.pipeline."""
    with clean_errors():
        from topicguard.bench import benchmark
        from topicguard.folder import GuardMetadata
        from topicguard.runtime import BACKENDS

        GuardMetadata.read(model)
        for name in backend or []:
            if name not in BACKENDS[1:]:
                raise usage_error(f"unknown backend {name!r}: use torch, onnx or onnx-int8")
        result = benchmark(
            model,
            backends=backend,
            single_queries=queries,
            threads=threads,
            second_opinion=second_opinion,
        )
        if save:
            from topicguard.folder import write_bench

            write_bench(model, result)
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
        if result["languages"]:
            typer.echo("\nthe routed guard (language detection included), per language:")
            for lang, r in result["languages"].items():
                typer.echo(
                    f"{lang:<10} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                    f"{r['throughput_qps']:>10.0f}"
                )


Host = Annotated[str, typer.Option(help="address to listen on")]
Port = Annotated[int, typer.Option(min=1, max=65535, help="port")]
BackendName = Annotated[str, typer.Option(help="auto, torch, onnx or onnx-int8")]
Threads = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, help="CPU threads for inference (per worker)"),
]
Workers = Annotated[
    int,
    typer.Option(
        min=1,
        help="server processes sharing the port, each with its own guard and "
        "cores/workers inference threads unless --threads says otherwise",
    ),
]
Ui = Annotated[
    bool, typer.Option("--ui/--no-ui", help="serve the web page at / (try it, guard card, review)")
]
ReviewDir = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        file_okay=False,
        help="folder where the page keeps files under review and the reviewed rows "
        "(NAME.reviewed.jsonl, for train --data); without it the page does not review",
    ),
]
ReportDir = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--report",
        exists=True,
        file_okay=False,
        help="an `evaluate --report` folder whose plots the guard card shows "
        "(default: MODEL/report when it exists)",
    ),
]


@app.command()
def serve(
    model: ModelDir,
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    backend: BackendName = "auto",
    threads: Threads = None,
    api_key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            envvar="TOPICGUARD_SERVE_API_KEY",
            show_default=False,
            help="require 'Authorization: Bearer KEY' (better: set the variable)",
        ),
    ] = None,
    max_texts: Annotated[
        int, typer.Option(min=1, help="texts per request")
    ] = ServeConfig.max_texts,
    max_chars: Annotated[
        int, typer.Option(min=1, help="characters per text")
    ] = ServeConfig.max_chars,
    second_opinion: SecondOpinion = True,
    log: LogFile = None,
    log_texts: LogTexts = False,
    log_max_mb: LogMaxMb = DEFAULT_MAX_MB,
    ui: Ui = True,
    review_dir: ReviewDir = None,
    report: ReportDir = None,
    workers: Workers = 1,
    on_ray: Annotated[
        bool,
        typer.Option("--ray", help="serve on Ray Serve (pip install 'topicguard[ray]')"),
    ] = False,
    replicas: Annotated[int, typer.Option(min=1, help="--ray: replicas of the guard")] = 1,
    autoscale: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="--ray: MIN:MAX replicas, scaled by load (instead of --replicas)"),
    ] = None,
) -> None:
    """Serve the guard over HTTP: POST /v1/classify, /healthz, /readyz, /metrics, and the web
    page at / (try it, guard card, review)."""
    with clean_errors():
        from topicguard.runtime import TopicGuard
        from topicguard.serve import ServeConfig, run

        if (workers > 1 or on_ray) and log is not None:
            raise usage_error("--log takes one writer: use --workers 1 with a decision log")
        if (workers > 1 or on_ray) and review_dir is not None:
            raise usage_error("--review-dir takes one writer: use --workers 1 to review")
        if not on_ray and (autoscale is not None or replicas != 1):
            raise usage_error("--replicas and --autoscale go with --ray")
        if on_ray and workers > 1:
            raise usage_error("--ray scales with --replicas or --autoscale, not --workers")
        _check_log(log, log_texts)
        # Load here, not in the server's start-up, so a bad folder or backend is one line
        # (with --workers or --ray, each worker or replica then loads its own).
        guard = TopicGuard.load(
            model, backend=backend, threads=threads, second_opinion=second_opinion
        )
        config = ServeConfig(
            model_dir=model,
            backend=backend,
            threads=threads,
            second_opinion=second_opinion,
            api_key=api_key,
            max_texts=max_texts,
            max_chars=max_chars,
            decision_log=log,
            log_texts=log_texts,
            log_max_mb=log_max_mb,
            ui=ui,
            review_dir=review_dir,
            report_dir=report,
        )
        logger.info("listening on http://%s:%d (auth %s)", host, port, "on" if api_key else "off")
        if on_ray:
            del guard
            _serve_on_ray(config, host=host, port=port, replicas=replicas, autoscale=autoscale)
        elif workers > 1:
            del guard
            run(config, host=host, port=port, workers=workers)
        else:
            run(config, host=host, port=port, guard=guard)


def _serve_on_ray(
    config: Any, *, host: str, port: int, replicas: int, autoscale: str | None
) -> None:
    from topicguard.integrations.ray import deployment, parse_autoscale, run_serve

    scale = parse_autoscale(autoscale) if autoscale is not None else None
    run_serve(
        deployment(config.model_dir, replicas=replicas, autoscale=scale, config=config),
        host=host,
        port=port,
    )


LogFile = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(dir_okay=False, help="append every decision to this JSONL decision log"),
]
LogTexts = Annotated[
    bool,
    typer.Option(
        "--log-texts", help="keep each text in the log (personal data: `feedback` needs it)"
    ),
]
LogMaxMb = Annotated[
    float,
    typer.Option(
        min=0.001, help=f"rotate the log past this size (keeps {DEFAULT_BACKUPS} old files)"
    ),
]


def _check_log(log: Path | None, log_texts: bool) -> None:
    """A decision log that cannot be written is one line, before the model loads."""
    if log_texts and log is None:
        raise usage_error("--log-texts needs --log FILE")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8"):
            pass
        logger.info("decisions go to %s%s", log, " with their texts" if log_texts else "")


@app.command()
def proxy(
    model: ModelDir,
    upstream: Annotated[
        str,
        typer.Option(
            help="the OpenAI-compatible LLM server to guard, e.g. http://localhost:8080/v1"
        ),
    ],
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    backend: BackendName = "auto",
    threads: Threads = None,
    api_key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            envvar="TOPICGUARD_PROXY_API_KEY",
            show_default=False,
            help="require 'Authorization: Bearer KEY' of clients (better: set the variable); "
            "it is not sent upstream",
        ),
    ] = None,
    upstream_key_env: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="environment variable holding the upstream's key (default: forward the "
            "client's Authorization header)"
        ),
    ] = None,
    upstream_timeout: Annotated[
        float,
        typer.Option(min=0.1, help="seconds for the upstream's answer (streams: between chunks)"),
    ] = ProxyConfig.upstream_timeout_s,
    spec: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(exists=True, dir_okay=False, help="guard.yaml whose refusal texts to use"),
    ] = None,
    second_opinion: SecondOpinion = True,
    log: LogFile = None,
    log_texts: LogTexts = False,
    log_max_mb: LogMaxMb = DEFAULT_MAX_MB,
    ui: Ui = True,
    review_dir: ReviewDir = None,
    report: ReportDir = None,
    workers: Workers = 1,
) -> None:
    """Guard an OpenAI-compatible LLM: POST /v1/chat/completions, GET /v1/models, probes, and
    the web page at / (try it, guard card, review)."""
    import os

    with clean_errors():
        from topicguard.proxy import ProxyConfig, run, upstream_base
        from topicguard.runtime import TopicGuard
        from topicguard.spec import load_spec

        base = upstream_base(upstream)  # a bad URL is one line before the model loads
        upstream_key = None
        if upstream_key_env is not None:
            upstream_key = os.environ.get(upstream_key_env)
            if not upstream_key:
                raise usage_error(f"--upstream-key-env: {upstream_key_env} is not set or empty")
        guard_spec = load_spec(spec) if spec is not None else None
        if workers > 1 and log is not None:
            raise usage_error("--log takes one writer: use --workers 1 with a decision log")
        if workers > 1 and review_dir is not None:
            raise usage_error("--review-dir takes one writer: use --workers 1 to review")
        _check_log(log, log_texts)
        guard = TopicGuard.load(
            model, backend=backend, threads=threads, second_opinion=second_opinion
        )
        config = ProxyConfig(
            api_key=api_key,
            upstream_key=upstream_key,
            upstream_timeout_s=upstream_timeout,
            decision_log=log,
            log_texts=log_texts,
            log_max_mb=log_max_mb,
            ui=ui,
            review_dir=review_dir,
            report_dir=report,
        )
        logger.info(
            "listening on http://%s:%d, guarding %s (auth %s)",
            host,
            port,
            base,
            "on" if api_key else "off",
        )
        run(
            guard,
            upstream,
            config,
            host=host,
            port=port,
            spec=guard_spec,
            workers=workers,
            threads=threads,
        )


def _evaluate_conversations(
    guard: Any, paths: list[Path], *, as_json: bool, report: Path | None, model: Path
) -> None:
    from topicguard.conversations import read_conversations
    from topicguard.evaluate import evaluate_conversations

    conversations = [c for path in paths for c in read_conversations(path)]
    evaluation = evaluate_conversations(guard, conversations)
    summary = evaluation.to_dict()
    if report is not None:
        from topicguard.folder import read_bench
        from topicguard.report import write_report

        write_report(
            evaluation.with_context,
            report,
            title=f"{model.name} on {', '.join(p.name for p in paths)} (user turns, with context)",
            bench=read_bench(model),
        )
        logger.info("report written to %s", report)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"{summary['conversations']} conversations, {summary['turns']} user turns; "
        f"context let {summary['context_used']} follow-ups through"
    )
    for key in ("with_context", "without_context"):
        typer.echo(f"\n{key.replace('_', ' ')}:")
        _print_metrics(summary[key])
    _print_context_languages(summary)
    if report is not None:
        typer.echo(f"report: {report / 'report.md'}")


def _print_context_languages(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    languages = summary["with_context"].get("languages", {})
    if not languages:
        return
    table = Table(title="per language: false blocks and leaks, with context (alone)")
    for column in ("lang", "turns", "false-block rate", "leak rate"):
        table.add_column(column, justify="left" if column == "lang" else "right")

    def rate(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2%}"

    for lang, group in languages.items():
        alone = summary["without_context"]["languages"][lang]
        table.add_row(
            lang,
            str(group["n"]),
            f"{rate(group['false_block_rate'])} ({rate(alone['false_block_rate'])})",
            f"{rate(group['leak_rate'])} ({rate(alone['leak_rate'])})",
        )
    Console().print(table)


def _print_calibration(calibration: Any, objective: Any, data: str) -> None:
    m = calibration.metrics
    typer.echo(
        f"threshold {calibration.threshold:.4f} for {objective.describe()}; "
        f"temperature {calibration.temperature:.2f} "
        f"(calibration error {calibration.ece_before:.3f} -> {calibration.ece_after:.3f})\n"
        f"on {data} ({calibration.n} queries): accuracy {m['accuracy']:.4f}, "
        f"F1 {m['f1']:.4f}, false blocks {m['false_block_rate']:.2%}, "
        f"leaks {m['leak_rate']:.2%}"
    )


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
