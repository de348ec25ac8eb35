"""Render measured numbers into the documents: each block between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in README.md and docs/*.md is
rewritten from ``results/NAME.json``, the record of a benchmark run (its command, UTC date,
the machine's CPU count and what the benchmark printed with ``--json``). Numbers in those
blocks are never typed by hand; the tables are in ``benchmarks/_tables.py``
(a trained guard's) and ``benchmarks/_recipe_tables.py`` (the benchmarks that train).

    python benchmarks/render.py [--results DIR] [--docs DIR] [--readme FILE] [--check]

The documents in this checkout are the templates: with ``--docs`` or ``--readme`` elsewhere,
the rendered copies go there (only the documents that hold blocks). ``--check`` fails when a
document is out of date instead of writing it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _recipe_tables
import _tables

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
TEMPLATES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(.*?)(<!-- /results:(?P=name) -->)", re.S)

RENDERERS: dict[str, Callable[..., str]] = {
    "averaging": _recipe_tables.averaging,
    "batch_score": _tables.batch_score,
    "bench": _tables.bench,
    "capacity": _tables.capacity,
    "compare": _recipe_tables.compare,
    "conversations": _tables.conversations,
    "cross_dataset": _recipe_tables.cross_dataset,
    "languages": _tables.languages,
    "load": _tables.load,
    "proxy": _tables.proxy,
    "reference": _recipe_tables.reference,
    "robustness": _tables.robustness,
    "scaling": _tables.scaling,
    "shipped": _tables.shipped,
    "summary": _tables.summary,
    "train_speed": _recipe_tables.train_speed,
}
# a block rendered from other files than its own results/NAME.json: the first is required,
# the others are optional (the table leaves out their rows when they are absent or skipped)
SOURCES: dict[str, tuple[str, ...]] = {
    "capacity": ("scaling",),
    "languages": ("shipped",),
    "reference": ("reference", "reference_clustered"),
    "summary": ("shipped", "train_speed", "bench"),
}


def read_record(path: Path) -> dict[str, Any]:
    """``results/NAME.json`` as a record: ``command``, ``date``, ``cpus``, maybe ``machine``,
    and ``result`` or ``skipped``. Older files kept the benchmark's own object at the top
    (``shipped.py``'s and ``train_speed.py``'s, with their date and CPU count): those read as
    a record holding that object."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if "result" in data or "skipped" in data:
        return dict(data)
    keys = ("command", "date", "cpus", "machine")
    record = {key: data[key] for key in keys if key in data}
    record.setdefault("command", "")
    return record | {"result": data}


# the long benchmarks that `make results` leaves out
TRAINING = ("train_speed", "averaging")


def _not_measured(name: str, results: Path, record: dict[str, Any] | None) -> str:
    if record is None:
        target = "results-training" if name in TRAINING else "results"
        return (
            f"Not measured yet: `make {target}` writes `{results.name}/{name}.json`, "
            "from which this table is rendered.\n"
        )
    return (
        f"Not measured: {record['skipped']} (`{record['command']}`, {record['date']}, "
        f"{record['cpus']} CPU cores).\n"
    )


def render_block(name: str, results: Path = RESULTS) -> str:
    """The Markdown of block ``name`` from the records in ``results``."""
    if name not in RENDERERS:
        raise SystemExit(
            f"error: no renderer or no results for block {name!r}: blocks are {sorted(RENDERERS)}"
        )
    sources = SOURCES.get(name, (name,))
    records = [
        read_record(results / f"{source}.json") if (results / f"{source}.json").is_file() else None
        for source in sources
    ]
    first = records[0]
    if first is None or "skipped" in first:
        return _not_measured(sources[0], results, first)
    optional = [None if record is None or "skipped" in record else record for record in records]
    return RENDERERS[name](first, *optional[1:])


def render(text: str, results: Path = RESULTS) -> str:
    """``text`` with every results block rewritten from the records in ``results``."""

    def replace(match: re.Match[str]) -> str:
        return match.group(1) + render_block(match.group("name"), results) + match.group(4)

    return BLOCK.sub(replace, text)


def outputs(docs: Path, readme: Path) -> list[tuple[Path, Path]]:
    """(template, rendered copy) for every document of this checkout that holds a block."""
    pairs = []
    for template in TEMPLATES:
        if BLOCK.search(template.read_text(encoding="utf-8")):
            target = readme if template.name == "README.md" and template.parent == ROOT else None
            pairs.append((template, target or docs / template.name))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results/*.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where docs/*.md go")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="README copy")
    parser.add_argument("--check", action="store_true", help="fail if a document is out of date")
    args = parser.parse_args(argv)
    stale = []
    for template, target in outputs(args.docs, args.readme):
        new = render(template.read_text(encoding="utf-8"), args.results)
        old = target.read_text(encoding="utf-8") if target.is_file() else None
        if new != old:
            stale.append(str(target))
            if not args.check:
                from topicguard._io import atomic_write_text

                atomic_write_text(target, new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python benchmarks/render.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
