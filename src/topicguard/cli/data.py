"""`topicguard data`: inspect and split labelled datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from topicguard.cli._common import ExistingFile, LabelColumn, app, clean_errors
from topicguard.coverage import DEFAULT_EMBEDDING_MODEL, DEFAULT_MIN_ROWS
from topicguard.leakage import DEFAULT_THRESHOLD

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
    threshold: Threshold = DEFAULT_THRESHOLD,
    strict: Annotated[
        bool, typer.Option(help="exit 1 when duplicates or conflicting labels exist")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    label_column: LabelColumn = None,
) -> None:
    """Counts, duplicates, near-duplicates, conflicting labels and lengths of datasets."""
    with clean_errors():
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
    threshold: Threshold = DEFAULT_THRESHOLD,
    label_column: LabelColumn = None,
) -> None:
    """Split a dataset into train.jsonl and test.jsonl, near-duplicate clusters kept whole."""
    with clean_errors():
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


@data_app.command("coverage")
def data_coverage(
    spec_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="the spec (guard.yaml)")
    ],
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="datasets")],
    min_rows: Annotated[
        int, typer.Option(min=1, help="a topic in a language is thin below this many rows")
    ] = DEFAULT_MIN_ROWS,
    embedding_model: Annotated[
        str,
        typer.Option(help="encoder that maps rows to topics (mean-pooled embeddings)"),
    ] = DEFAULT_EMBEDDING_MODEL,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    label_column: LabelColumn = None,
) -> None:
    """Training rows per allowed and blocked topic of the spec, per language: thin cells first."""
    with clean_errors():
        from topicguard.coverage import TransformerEmbedder, coverage
        from topicguard.data import read_datasets
        from topicguard.spec import load_spec

        spec = load_spec(spec_file)
        examples = read_datasets(files, label_column=label_column)
        result = coverage(
            spec, examples, embed=TransformerEmbedder(embedding_model), min_rows=min_rows
        )
        if as_json:
            typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            _print_coverage(result)


def _print_coverage(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    thin = result.thin
    console.print(
        f"{result.n_rows} rows; {len(thin)} of {len(result.cells)} topic-language cells have "
        f"fewer than {result.min_rows} rows"
    )
    if thin:
        table = Table(title=f"thin cells (< {result.min_rows} rows)")
        for column in ("side", "topic", "lang", "rows"):
            table.add_column(column, justify="right" if column == "rows" else "left")
        for cell in thin:
            table.add_row(cell.side, _short(cell.topic), cell.lang, str(cell.rows))
        console.print(table)
    table = Table(title="rows per topic and language")
    table.add_column("side")
    table.add_column("topic")
    for lang in result.languages:
        table.add_column(lang, justify="right")
    table.add_column("total", justify="right")
    by_topic = result.topic_totals()
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for cell in result.cells:
        rows.setdefault((cell.side, cell.topic), {})[cell.lang] = cell.rows
    for (side, topic), counts in rows.items():
        shown = [
            f"[red]{n}[/red]" if n < result.min_rows else str(n)
            for n in (counts[lang] for lang in result.languages)
        ]
        table.add_row(side, _short(topic), *shown, str(by_topic[topic]))
    by_lang = result.language_totals()
    table.add_row(
        "", "total", *(str(by_lang[lang]) for lang in result.languages), str(sum(by_lang.values()))
    )
    console.print(table)
    if result.other_languages:
        other = ", ".join(f"{lang} {n}" for lang, n in result.other_languages.items())
        console.print(f"rows in languages the spec does not list: {other}", markup=False)
    console.print(
        f"placed by category: {result.placed_by_category} rows; by similarity: "
        f"{result.placed_by_similarity} rows"
    )
    for note in result.notes:
        console.print(f"note: {note}", markup=False)


def _short(text: str, width: int = 60) -> str:
    from rich.markup import escape

    return escape(text if len(text) <= width else text[: width - 1] + "…")


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
