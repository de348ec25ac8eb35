"""The tables of the benchmarks that train: the training profile, checkpoint averaging, the
reference experiment, the cross-dataset test and the cheaper alternatives (the records as in
``benchmarks/_tables.py``)."""

from __future__ import annotations

from _tables import LANGUAGES, Record, machine_line, measured_by


def train_speed(record: Record) -> str:
    """The training profile: one row per recipe, then the stages of the default one."""
    result = record["result"]
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
        f"Measured by `{record['command']}` on {machine_line(record)} (this machine's yardstick, "
        f"`machine_ms`: {result['machine_ms']:.0f} ms for a fixed batch through MiniLM; a "
        "machine twice as slow takes about twice as long).",
    ]
    return "\n".join(lines) + "\n"


def reference(random: Record, clustered: Record | None = None) -> str:
    """``benchmarks/reference.py --json``, the reference's random split and the clustered one."""
    lines = [
        "| split | weighted F1 | F1 | false blocks | leaks | rows: train / test | training |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    records = [record for record in (random, clustered) if record and "result" in record]
    for record in records:
        r = record["result"]
        what = {
            "random": "the reference's random split",
            "clustered": "clustered split (paraphrases on one side)",
        }
        lines.append(
            f"| {what.get(r['split'], r['split'])} | {r['f1_weighted']:.3f} | "
            f"{r['f1']:.3f} | {r['false_block_rate']:.2%} | {r['leak_rate']:.2%} | "
            f"{r['n_train']:,} / {r['n_test']:,} | {r['train_seconds']:.0f} s |"
        )
    lines += ["", f"Measured on {machine_line(records[0])}, by:", "```bash"]
    lines += [record["command"] for record in records] + ["```"]
    return "\n".join(lines) + "\n"


def cross_dataset(record: Record) -> str:
    """``benchmarks/cross_dataset.py --json``: trained on one dataset, tested on the other."""
    directions = record["result"]["directions"]
    names = {
        "bundled_to_reference": "bundled English rows → all reviewed reference rows",
        "reference_to_bundled": "reference rows → the bundled English test rows",
    }
    lines = [
        "| trained on → tested on | F1 | false blocks | leaks | rows: train / test |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in directions.items():
        lines.append(
            f"| {names.get(name, name)} | {r['f1']:.3f} | {r['false_block_rate']:.2%} | "
            f"{r['leak_rate']:.2%} | {r['n_train']:,} / {r['n_test']:,} |"
        )
    return "\n".join(lines + measured_by(record)) + "\n"


METHOD_NAMES = {
    "tfidf_logreg": "TF-IDF words + char n-grams, logistic regression",
    "embedding_logreg": "frozen encoder, mean-pooled, logistic regression",
    "nearest_example": "nearest example, similarity margin (semantic-router)",
    "fine_tuned": "fine-tuned (PyTorch)",
    "fine_tuned_int8": "fine-tuned (int8 ONNX)",
}
TASK_NAMES = {
    "reference": "Reference data, leakage-aware split",
    "cross": "Bundled English training rows → all reviewed reference rows",
}


def compare(record: Record) -> str:
    """``benchmarks/compare.py --json``: every method on the same rows, per task."""
    lines: list[str] = []
    for task, methods in record["result"].items():
        lines += [
            f"{TASK_NAMES.get(task, task)} ({methods.get('_split', '')}):",
            "",
            "| method | F1 | false blocks | leaks | leaks at 1% (false blocks) | p50 ms "
            "| training |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in methods.items():
            if name.startswith("_"):
                continue
            lines.append(
                f"| {METHOD_NAMES.get(name, name)} | {r['f1']:.3f} | "
                f"{r['false_block_rate']:.2%} | {r['leak_rate']:.2%} | "
                f"{r['leak_rate_at_1pct']:.2%} ({r['false_block_rate_at_1pct']:.2%}) | "
                f"{r['p50_ms']:.2f} | {r['train_seconds']:.1f} s |"
            )
        lines.append("")
    return "\n".join(lines[:-1] + measured_by(record)) + "\n"


def averaging(record: Record) -> str:
    """``benchmarks/averaging.py --json``: the best epoch against the mean of the last
    epochs' weights, per seed, and how many verdicts changed from seed to seed."""
    rules = {"best_epoch": "best single epoch", "averaged": "averaged (the default)"}
    lines = [
        "| kept | seed | epochs kept | bundled English test: F1, errors | reference: F1, "
        "false blocks, leaks |",
        "| --- | --- | --- | --- | --- |",
    ]
    changed = []
    for rule, per_seed in record["result"].items():
        for seed, row in per_seed.items():
            if seed == "verdicts_changed_between_seeds":
                changed.append(f"{rules.get(rule, rule)}: {', '.join(map(str, row))}")
                continue
            test, ref = row["bundled_test"], row["reference"]
            lines.append(
                f"| {rules.get(rule, rule)} | {seed} | {row['kept']} | {test['f1']:.3f}, "
                f"{test['errors']} | {ref['f1']:.3f}, {ref['false_block_rate']:.2%}, "
                f"{ref['leak_rate']:.2%} |"
            )
    lines += ["", "Verdicts changed from the first seed's: " + "; ".join(changed) + "."]
    return "\n".join(lines + measured_by(record)) + "\n"
