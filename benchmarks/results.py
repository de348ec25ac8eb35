"""Measure a trained guard and render the documents: what ``make results`` runs.

Each benchmark runs in a process of its own with ``--json``; what it prints goes into
``RESULTS/NAME.json`` with the command, the date (UTC), the CPU count and the machine
(``benchmarks/_common.py``). A benchmark that needs the reference data is skipped when the
data is not there (``$TOPICGUARD_REFERENCE_DATA`` or ``--reference``): it says why, and so
does its table. Then ``benchmarks/render.py`` writes ``DOCS/results.md`` and the README's
table from the JSON. ``--training`` runs the long training benchmarks instead (``make
results-training``: ``train_speed`` and ``averaging``, an hour or more on 2 cores).

    python benchmarks/results.py [--model runs/demo] [--guards GUARD...] [--results results]
        [--docs docs] [--readme README.md] [--only NAME...] [--training]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import render

ROOT = _common.ROOT
CONVERSATIONS = "src/topicguard/examples/logistics/conversations.jsonl"
TOPICGUARD = [sys.executable, "-c", "from topicguard.cli import main; main()"]


@dataclass(frozen=True)
class Benchmark:
    """One run: ``results/NAME.json`` from ``command``, as a person would type it."""

    name: str
    command: list[str]
    needs_reference: bool = False
    needs_ray: bool = False  # the `ray` extra (Ray Data, Ray Serve)

    @property
    def shown(self) -> str:
        return shlex.join(self.command)

    def argv(self) -> list[str]:
        """The command for this interpreter: ``python`` is this one, ``topicguard`` its CLI."""
        program, *rest = self.command
        if program == "topicguard":
            return [*TOPICGUARD, *rest]
        return [sys.executable, *rest] if program == "python" else self.command


def _flag(name: str, value: Any) -> list[str]:
    return [] if value is None else [name, f"{value:g}" if isinstance(value, float) else str(value)]


def from_root(path: Path) -> str:
    """``path`` as a command run from the repository's root names it (the benchmarks run
    there)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def guard_benchmarks(args: argparse.Namespace) -> list[Benchmark]:
    """The benchmarks of ``make results``: the trained guard ``--model`` (and ``--guards``),
    then the recipe trained afresh on the reference data."""
    model = from_root(args.model)
    guards = [from_root(guard) for guard in args.guards or [args.model]]
    training = [*_flag("--base-model", args.base_model), *_flag("--epochs", args.epochs)]
    training += _flag("--limit", args.limit)
    script = "python benchmarks/"
    return [
        Benchmark("shipped", [*f"{script}shipped.py".split(), *guards]),
        Benchmark("conversations", ["topicguard", "evaluate", model, CONVERSATIONS, "--json"]),
        Benchmark(
            "bench",
            ["topicguard", "bench", model, "--json", "--no-save"]
            + _flag("--queries", args.queries),
        ),
        Benchmark(
            "load",
            [*f"{script}load.py".split(), model, *_flag("--clients", args.clients)]
            + _flag("--seconds", args.seconds),
        ),
        Benchmark(
            "proxy",
            [*f"{script}proxy.py --model".split(), model, "--json"]
            + _flag("--requests", args.requests),
        ),
        Benchmark(
            "scaling",
            [*f"{script}load.py".split(), model, "--compare", "--json"]
            + _flag("--clients", args.clients)
            + _flag("--seconds", args.seconds),
        ),
        Benchmark(
            "batch_score",
            [*f"{script}batch_score.py".split(), model, "--json"] + _flag("--n", args.limit),
            needs_ray=True,
        ),
        Benchmark(
            "robustness",
            [*f"{script}robustness.py --model".split(), model, "--json"]
            + _flag("--limit", args.limit),
        ),
        Benchmark("reference", [*f"{script}reference.py --json".split(), *training], True),
        Benchmark(
            "reference_clustered",
            [*f"{script}reference.py --split clustered --json".split(), *training],
            True,
        ),
        Benchmark("cross_dataset", [*f"{script}cross_dataset.py --json".split(), *training], True),
        Benchmark("compare", [*f"{script}compare.py --json".split(), *training], True),
    ]


def training_benchmarks(args: argparse.Namespace) -> list[Benchmark]:
    """The long ones, kept out of ``make results``: the training profile and averaging."""
    base = _flag("--base-model", args.base_model) + _flag("--limit", args.limit)
    return [
        Benchmark(
            "train_speed",
            ["python", "benchmarks/train_speed.py", "--export", "--json", *base],
        ),
        Benchmark("averaging", ["python", "benchmarks/averaging.py", "--json", *base], True),
    ]


def run(benchmark: Benchmark, results: Path) -> str:
    """Run one benchmark into ``results/NAME.json``: "measured", "skipped" or "failed"."""
    target = results / f"{benchmark.name}.json"
    if benchmark.needs_reference:
        try:
            _common.reference_file()
        except _common.MissingReference as exc:
            print(f"{benchmark.name}: skipped, {exc}")
            _common.write_result(target, benchmark.shown, skipped=str(exc))
            return "skipped"
    if benchmark.needs_ray and importlib.util.find_spec("ray") is None:
        reason = "Ray is not installed: pip install 'topicguard[ray]'"
        print(f"{benchmark.name}: skipped, {reason}")
        _common.write_result(target, benchmark.shown, skipped=reason)
        return "skipped"
    print(f"{benchmark.name}: {benchmark.shown}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(benchmark.argv(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"{benchmark.name}: failed (exit code {done.returncode}, no JSON printed)")
        return "failed"
    if done.returncode != 0:  # load.py and proxy.py print their numbers, then say they failed
        print(f"{benchmark.name}: exit code {done.returncode}; its numbers are kept")
    _common.write_result(target, benchmark.shown, result)
    print(f"{benchmark.name}: {time.perf_counter() - started:.0f} s -> {target}")
    return "measured"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo"), help="trained guard")
    parser.add_argument("--guards", type=Path, nargs="+", help="shipped.py's guards (--model)")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--reference", type=Path, help=_common.REFERENCE_HELP)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--training", action="store_true", help="the training benchmarks")
    quick = parser.add_argument_group("a quick look (smaller runs than the defaults)")
    for flag in ("--limit", "--epochs", "--queries", "--clients", "--requests"):
        quick.add_argument(flag, type=int)
    quick.add_argument("--seconds", type=float)
    quick.add_argument("--base-model", help="the encoder the training benchmarks fine-tune")
    args = parser.parse_args(argv)
    if args.reference is not None:
        os.environ["TOPICGUARD_REFERENCE_DATA"] = str(args.reference.resolve())
    benchmarks = training_benchmarks(args) if args.training else guard_benchmarks(args)
    unknown = set(args.only or []) - {b.name for b in benchmarks}
    if unknown:
        parser.error(f"unknown benchmark {sorted(unknown)}: use {[b.name for b in benchmarks]}")
    if not args.training and not (args.model / "topicguard.json").is_file():
        print(
            f"error: no trained guard in {args.model}: train one (`make demo`, or "
            f"`topicguard train --out {args.model}`) or name it with MODEL=FOLDER",
            file=sys.stderr,
        )
        return 1
    chosen = [b for b in benchmarks if not args.only or b.name in args.only]
    outcome = {b.name: run(b, args.results.resolve()) for b in chosen}
    failed = [name for name, status in outcome.items() if status == "failed"]
    if failed:
        print(f"error: {', '.join(failed)} failed; the documents are left as they were")
        return 1
    skipped = [name for name, status in outcome.items() if status == "skipped"]
    code = render.main(
        ["--results", str(args.results), "--docs", str(args.docs), "--readme", str(args.readme)]
    )
    print(
        f"rendered {args.docs / 'results.md'} and {args.readme} from {args.results}"
        + (f" ({', '.join(skipped)} skipped)" if skipped else "")
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
