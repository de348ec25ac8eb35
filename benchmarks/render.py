"""Render measured numbers into the documents: each block between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in README.md and docs/*.md is
rewritten from ``results/NAME.json``, the ``--json`` output of a benchmark (the ``summary``
block from ``results/shipped.json`` and ``results/train_speed.json`` together). Numbers in
those blocks are never typed by hand.

    python benchmarks/render.py [--check]   # --check: fail if a block is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(.*?)(<!-- /results:(?P=name) -->)", re.S)
LANGUAGES = ["en", "zh", "es", "de", "fr"]


def train_speed(result: dict[str, Any]) -> str:
    """The training profile: one row per recipe, then the stages of the default one."""
    lines = [
        "| recipe | wall time | multilingual model | fast model | validation errors "
        "(" + " / ".join(LANGUAGES) + ") | folder, with ONNX and int8 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"].values():
        models = run["models"]
        errors = run["validation_errors"]
        rows = run["validation_rows"]
        per_lang = " / ".join(f"{errors.get(lang, 0)} of {rows.get(lang, 0)}" for lang in LANGUAGES)
        lines.append(
            f"| `--preset {run['preset']}` (seed {run['seed']}) | {run['minutes']:.1f} min | "
            + " | ".join(
                f"{models[m]['minutes']:.1f} min, {models[m]['tokens_per_second']:,} tokens/s"
                if m in models
                else "-"
                for m in ("multilingual", "fast")
            )
            + f" | {per_lang} | {run.get('folder_mb_exported', run['folder_mb']):,.0f} MB |"
        )
    first = next(iter(result["runs"].values()))
    lines += ["", "| stage (first row) | multilingual model | fast model |", "| --- | --- | --- |"]
    stages = first["models"].get("multilingual", {}).get("stages_seconds", {})
    fast = first["models"].get("fast", {}).get("stages_seconds", {})
    for stage in dict.fromkeys([*stages, *fast]):
        cells = [f"{s[stage]:.0f} s" if stage in s else "-" for s in (stages, fast)]
        lines.append(f"| {stage} | {cells[0]} | {cells[1]} |")
    if "export_minutes" in first:
        lines.append(f"| `export --int8` (both models) | {first['export_minutes'] * 60:.0f} s | |")
    lines += [
        "",
        f"Measured by `{result['command']}` on {result['date']}, {result['cpus']} CPU cores "
        f"(this machine's yardstick, `machine_ms`: {result['machine_ms']:.0f} ms for a fixed "
        "batch through MiniLM; a machine twice as slow takes about twice as long).",
    ]
    return "\n".join(lines) + "\n"


def shipped(result: dict[str, Any]) -> str:
    """The default recipe's guards on the bundled test file and the reference data:
    ``results/shipped.json`` holds ``topicguard evaluate --json`` per guard and dataset."""
    lines = [
        "| guard | data | rows | F1 | false blocks | leaks | errors: "
        + " / ".join(LANGUAGES)
        + " |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["evaluations"]:
        m = row["metrics"]
        langs = m.get("languages", {})
        errors = " / ".join(
            f"{int(langs[lang]['errors'])} of {int(langs[lang]['n'])}" if lang in langs else "-"
            for lang in LANGUAGES
        )
        lines.append(
            f"| {row['guard']} | {row['data']} | {m['n']:,} | {m['f1']:.4f} | "
            f"{m['false_block_rate']:.2%} | {m['leak_rate']:.2%} | {errors} |"
        )
    lines += ["", f"Measured on {result['date']}, {result['cpus']} CPU cores, by:", "```bash"]
    lines += [row["command"] for row in result["evaluations"]] + ["```"]
    return "\n".join(lines) + "\n"


def summary(shipped: dict[str, Any], train_speed: dict[str, Any]) -> str:
    """The README's one table: the first guard of ``results/shipped.json`` on the bundled
    test file and the reference data, and the first run of ``results/train_speed.json``."""
    evaluations = shipped["evaluations"]
    guard = evaluations[0]["guard"]
    by_data = {row["data"]: row for row in evaluations if row["guard"] == guard}
    backend = evaluations[0].get("backend")
    lines = [f"| | `{guard}`" + (f" ({backend})" if backend else "") + " |", "| --- | --- |"]
    test = by_data.get("bundled test file")
    if test:
        m = test["metrics"]
        langs = m.get("languages", {})
        present = [lang for lang in LANGUAGES if lang in langs]
        lines.append(
            f"| bundled test file, {m['n']:,} rows: accuracy / F1 | "
            f"{m['accuracy']:.3f} / {m['f1']:.3f} |"
        )
        if present:
            lines.append(
                "| its errors per language: "
                + " / ".join(present)
                + " | "
                + " / ".join(
                    f"{int(langs[lang]['errors']):,} of {int(langs[lang]['n']):,}"
                    for lang in present
                )
                + " |"
            )
    reference = by_data.get("reference data")
    if reference:
        m = reference["metrics"]
        lines.append(
            f"| reference data, {m['n']:,} rows: F1 / false blocks / leaks | "
            f"{m['f1']:.3f} / {m['false_block_rate']:.2%} / {m['leak_rate']:.2%} |"
        )
    run = next(iter(train_speed["runs"].values()))
    lines.append(
        f"| training wall time (`--preset {run['preset']}`, seed {run['seed']}, "
        f"{train_speed['cpus']} CPU cores) | {run['minutes']:.1f} min |"
    )
    exported = "folder_mb_exported" in run
    lines.append(
        "| model folder" + (", with ONNX and int8" if exported else "") + " | "
        f"{run.get('folder_mb_exported', run['folder_mb']):,.0f} MB |"
    )
    dates = " and ".join(sorted({shipped["date"], train_speed["date"]}))
    lines += [
        "",
        f"Measured on {dates}, {shipped['cpus']} CPU cores, by:",
        "```bash",
        train_speed["command"],
    ]
    lines += [row["command"] for row in by_data.values()] + ["```"]
    return "\n".join(lines) + "\n"


def _measured_by(wrapped: dict[str, Any]) -> list[str]:
    return [
        "",
        f"Measured on {wrapped['date']}, {wrapped['cpus']} CPU cores, by `{wrapped['command']}`.",
    ]


def robustness(wrapped: dict[str, Any]) -> str:
    """``benchmarks/robustness.py --json`` (in ``result``): the share of verdicts that flip
    when test messages are combined, per check and language, beside the check's target."""
    result = wrapped["result"]
    checks = {
        "attack": "a blocked message behind or before an on-topic sentence",
        "greeting_thanks": "an on-topic message with a greeting or thanks",
        "harmless_words": "a blocked message with a few harmless words",
    }
    lines = [
        "| composition | flipped | target | " + " / ".join(LANGUAGES) + " |",
        "| --- | --- | --- | --- |",
    ]
    for key, what in checks.items():
        check = result[key]
        overall = check["overall"]
        per_lang = " / ".join(
            f"{check['by_language'][lang]['flip_share']:.1%}"
            if lang in check["by_language"]
            else "-"
            for lang in LANGUAGES
        )
        lines.append(
            f"| {what} ({overall['counted']:,}) | {overall['flip_share']:.1%} | "
            f"≤ {check['target']:.0%} | {per_lang} |"
        )
    return "\n".join(lines + _measured_by(wrapped)) + "\n"


def _share(value: float | None) -> str:
    """A rate as a percentage; "-" where it has no rows to be a rate of."""
    return "-" if value is None else f"{value:.1%}"


def conversations(wrapped: dict[str, Any]) -> str:
    """``topicguard evaluate GUARD conversations.jsonl --json`` (in ``result``): per-turn
    false blocks and leaks with and without context, overall and per language."""
    result = wrapped["result"]
    lines = [
        f"{result['conversations']:,} conversations, {result['turns']:,} user turns; context let "
        f"{result['context_used']:,} follow-ups through.",
        "",
        "| user turns judged | false blocks | leaks | false blocks / leaks: "
        + " / ".join(LANGUAGES)
        + " |",
        "| --- | --- | --- | --- |",
    ]
    for key, what in (("without_context", "alone"), ("with_context", "with context")):
        m = result[key]
        langs = m.get("languages", {})
        per_lang = " / ".join(
            f"{_share(langs[lang]['false_block_rate'])}, {_share(langs[lang]['leak_rate'])}"
            if lang in langs
            else "-"
            for lang in LANGUAGES
        )
        lines.append(
            f"| {what} | {m['false_block_rate']:.1%} | {m['leak_rate']:.1%} | {per_lang} |"
        )
    return "\n".join(lines + _measured_by(wrapped)) + "\n"


RENDERERS: dict[str, Callable[..., str]] = {
    "conversations": conversations,
    "robustness": robustness,
    "shipped": shipped,
    "summary": summary,
    "train_speed": train_speed,
}
# a block rendered from more than its own results/NAME.json
SOURCES: dict[str, tuple[str, ...]] = {"summary": ("shipped", "train_speed")}


def render(text: str, results: Path = RESULTS) -> str:
    """``text`` with every results block rewritten from its results JSON."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        sources = [results / f"{source}.json" for source in SOURCES.get(name, (name,))]
        missing = [source for source in sources if not source.is_file()]
        if name not in RENDERERS or missing:
            lacking = missing[0] if missing else "renderer"
            raise SystemExit(f"error: no renderer or no {lacking} for block {name!r}")
        body = RENDERERS[name](*(json.loads(path.read_text(encoding="utf-8")) for path in sources))
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a block is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python benchmarks/render.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
