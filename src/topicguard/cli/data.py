"""`topicguard data`: inspect and split labelled datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from topicguard.cli._common import ExistingFile, LabelColumn, app, clean_errors

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
    threshold: Threshold = 0.8,
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
