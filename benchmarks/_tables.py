"""The tables of a trained guard's measurements that ``benchmarks/render.py`` writes into the
documents, one function per results block (those of the benchmarks that train are in
``benchmarks/_recipe_tables.py``). Each takes the records of its ``results/*.json`` files
(``command``, ``date``, ``cpus``, maybe ``machine``, and ``result``: what the benchmark printed
with ``--json``), ``None`` for an optional one that is absent, and returns the Markdown.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ["en", "zh", "es", "de", "fr"]
Record = dict[str, Any]


def measured_by(record: Record) -> list[str]:
    """The closing line of a table: when, on how many cores, by which command."""
    return ["", f"Measured on {machine_line(record)}, by `{record['command']}`."]


def machine_line(record: Record) -> str:
    cpu = (record.get("machine") or {}).get("cpu")
    return f"{record['date']}, {record['cpus']} CPU cores" + (f" ({cpu})" if cpu else "")


def _share(value: float | None, digits: int = 1) -> str:
    """A rate as a percentage; "-" where it has no rows to be a rate of."""
    return "-" if value is None else f"{value:.{digits}%}"


def shipped(record: Record) -> str:
    """The guards on the bundled test file and the reference data: ``results/shipped.json``
    holds ``topicguard evaluate --json`` per guard and dataset."""
    lines = [
        "| guard | data | rows | F1 | false blocks | leaks | errors: "
        + " / ".join(LANGUAGES)
        + " |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    evaluations = record["result"]["evaluations"]
    for row in evaluations:
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
    lines += ["", f"Measured on {machine_line(record)}, by:", "```bash"]
    lines += [row["command"] for row in evaluations] + ["```"]
    return "\n".join(lines) + "\n"


def _f1(on_topic: float, false_blocks: float, leaks: float) -> float | None:
    """F1 of the on-topic class from a group's counts (``evaluate --json`` gives counts per
    language, not F1)."""
    allowed_right = on_topic - false_blocks
    denominator = 2 * allowed_right + false_blocks + leaks
    return None if denominator == 0 else 2 * allowed_right / denominator


def languages(record: Record) -> str:
    """The first guard of ``results/shipped.json`` on the bundled test file, per language:
    its ``evaluate --json`` object's ``languages``."""
    evaluations = record["result"]["evaluations"]
    test = next(row for row in evaluations if row["data"] == "bundled test file")
    m = test["metrics"]
    lines = [
        f"`{test['guard']}`" + (f" ({test['backend']})" if test.get("backend") else "") + ":",
        "",
        "| language | test rows | accuracy | F1 | false blocks | leaks |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    groups = m.get("languages", {})
    for lang in [
        *(lang for lang in LANGUAGES if lang in groups),
        *sorted(set(groups) - set(LANGUAGES)),
    ]:
        group = groups[lang]
        f1 = _f1(group["on_topic"], group["false_blocks"], group["leaks"])
        lines.append(
            f"| {lang} | {int(group['n']):,} | {group['accuracy']:.3f} | "
            f"{'-' if f1 is None else f'{f1:.3f}'} | "
            f"{_share(group['false_block_rate'], 2)} ({int(group['false_blocks'])} of "
            f"{int(group['on_topic'])}) | {_share(group['leak_rate'], 2)} |"
        )
    share = m.get("second_opinion_share")
    lines.append(
        f"| all{f' (second opinion on {share:.1%})' if share is not None else ''} | "
        f"{m['n']:,} | {m['accuracy']:.3f} | {m['f1']:.3f} | {m['false_block_rate']:.2%} | "
        f"{m['leak_rate']:.2%} |"
    )
    lines += ["", f"Measured on {machine_line(record)}, by `{test['command']}`."]
    return "\n".join(lines) + "\n"


def _speed(shipped: Record, bench: Record) -> tuple[str, str] | None:
    """The README's speed row: the shipped guard's backend against the pipeline, p50."""
    backends = bench["result"]["backends"]
    if "pipeline" not in backends or len(backends) < 2:
        return None
    name = shipped["result"]["evaluations"][0].get("backend")
    if name not in backends:
        name = min((b for b in backends if b != "pipeline"), key=lambda b: backends[b]["p50_ms"])
    ours, pipeline = backends[name]["p50_ms"], backends["pipeline"]["p50_ms"]
    return (
        f"| speed, one English query at a time: p50 of {name} / `transformers.pipeline` | "
        f"{ours:.2f} ms / {pipeline:.2f} ms ({pipeline / ours:.1f}x) |",
        bench["command"],
    )


def summary(shipped: Record, train_speed: Record | None = None, bench: Record | None = None) -> str:
    """The README's one table: the first guard of ``results/shipped.json`` on the bundled
    test file and the reference data, its speed from ``results/bench.json`` and the first run
    of ``results/train_speed.json``."""
    evaluations = shipped["result"]["evaluations"]
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
    commands, records = [], [shipped]
    speed = _speed(shipped, bench) if bench else None
    if speed:
        lines.append(speed[0])
        records.append(bench)  # type: ignore[arg-type]
    if train_speed:
        run = next(iter(train_speed["result"]["runs"].values()))
        lines.append(
            f"| training wall time (`--preset {run['preset']}`, seed {run['seed']}, "
            f"{train_speed['cpus']} CPU cores) | {run['minutes']:.1f} min |"
        )
        exported = "folder_mb_exported" in run
        lines.append(
            "| model folder" + (", with ONNX and int8" if exported else "") + " | "
            f"{run.get('folder_mb_exported', run['folder_mb']):,.0f} MB |"
        )
        commands.append(train_speed["command"])
        records.append(train_speed)
    dates = " and ".join(sorted({record["date"] for record in records}))
    lines += ["", f"Measured on {dates}, {shipped['cpus']} CPU cores, by:", "```bash"]
    lines += commands + [row["command"] for row in by_data.values()]
    lines += ([speed[1]] if speed else []) + ["```"]
    return "\n".join(lines) + "\n"


BACKEND_NAMES = {
    "pipeline": "`transformers.pipeline` (reference path)",
    "torch": "PyTorch (`--backend torch`)",
    "onnx": "ONNX fp32",
    "onnx-int8": "ONNX int8",
}


def bench(record: Record) -> str:
    """``topicguard bench MODEL --json``: each backend, then the routed guard per language."""
    result = record["result"]
    threads = f"{result['threads']} thread{'' if result['threads'] == 1 else 's'}"
    lines = [
        f"`{result['model']}`: {result['n_single']:,} English queries one at a time, then "
        f"{result['n_batch']:,} in batches of {result['batch_size']}, {threads}, second "
        f"opinion {'on' if result.get('second_opinion') else 'off'}.",
        "",
        "| backend (English queries) | p50 ms | p95 ms | p99 ms | queries/s one at a time "
        "| queries/s (batches) | batches ÷ one at a time | speed-up (p50) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in result["backends"].items():
        speedup = row.get("speedup_vs_pipeline")
        single = row.get("single_qps")  # absent from records made before it was measured
        one_at_a_time = "-" if single is None else f"{single:,.0f}"
        ratio = "-" if single is None else f"{row['batch_vs_single']:.1f}x"
        lines.append(
            f"| {BACKEND_NAMES.get(name, name)} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {one_at_a_time} | {row['throughput_qps']:,.0f} | {ratio} | "
            f"{'-' if speedup is None else f'{speedup:.1f}x'} |"
        )
    if result.get("languages"):
        langs = result["languages"]
        lines += [
            "",
            "| routed guard, one query at a time | " + " | ".join(langs) + " |",
            "| --- |" + " --- |" * len(langs),
            "| p50 ms | " + " | ".join(f"{row['p50_ms']:.2f}" for row in langs.values()) + " |",
            "| p99 ms | " + " | ".join(f"{row['p99_ms']:.1f}" for row in langs.values()) + " |",
        ]
    return "\n".join(lines + measured_by(record)) + "\n"


def load(record: Record) -> str:
    """``benchmarks/load.py``: ``topicguard serve`` on loopback under concurrent clients."""
    r = record["result"]
    lines = [
        "| clients | seconds | requests | requests/s | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {r['clients']} | {r['seconds']:g} | {r['requests']:,} | "
        f"{r['requests_per_second']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{r['errors']:,} |",
    ]
    return "\n".join(lines + measured_by(record)) + "\n"


def proxy(record: Record) -> str:
    """``benchmarks/proxy.py --json``: a chat request straight to a fake LLM and through
    ``topicguard proxy``, per case."""
    r = record["result"]
    lines = [
        f"`{r['model']}` ({r['backend']}), a fake LLM answering after "
        f"{r['upstream_delay_ms']:g} ms, {r['requests']:,} requests a case; the guard's own "
        f"p50 {r['guard_p50_ms']:.2f} ms back to back"
        + (
            f", {r['guard_paced_p50_ms']:.2f} ms at the requests' pace"
            if "guard_paced_p50_ms" in r  # records from before it was measured lack it
            else ""
        )
        + f"; {r['verdict_mismatches']} verdicts differed between the guard and the proxy.",
        "",
        "| case | direct p50 ms | through the proxy p50 ms | added p50 / p99 ms "
        "| guard in the proxy p50 ms | proxy overhead p50 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind in ("allowed", "blocked"):
        for mode in ("json", "stream"):
            row = r[kind][mode]
            if row is None:
                lines.append(f"| {kind}, {mode} | no text judged {kind} | | | | |")
                continue
            lines.append(
                f"| {kind}, {mode} | {row['direct_p50_ms']:.2f} | {row['proxy_p50_ms']:.2f} | "
                f"{row['added_p50_ms']:.2f} / {row['added_p99_ms']:.2f} | "
                f"{row['guard_in_proxy_p50_ms']:.2f} | {row['overhead_p50_ms']:.2f} |"
            )
    return "\n".join(lines + measured_by(record)) + "\n"


def robustness(record: Record) -> str:
    """``benchmarks/robustness.py --json``: the share of verdicts that flip when test
    messages are combined, per check and language, beside the check's target."""
    result = record["result"]
    checks = {
        "attack": "a blocked message behind or before an on-topic sentence",
        "greeting_thanks": "an on-topic message with a greeting or thanks",
        "harmless_words": "a blocked message with a few harmless words",
    }
    # records from before the sentence check lack the whole-message-only column
    whole = result.get("whole_message_only")
    lines = [
        "| composition | flipped | "
        + ("judged only whole | " if whole else "")
        + "target | "
        + " / ".join(LANGUAGES)
        + " |",
        "| --- | --- | --- | --- |" + (" --- |" if whole else ""),
    ]
    for key, what in checks.items():
        check = result[key]
        overall = check["overall"]
        only_whole = f"{_share(whole[key])} | " if whole else ""
        per_lang = " / ".join(
            f"{check['by_language'][lang]['flip_share']:.1%}"
            if lang in check["by_language"] and check["by_language"][lang]["flip_share"] is not None
            else "-"
            for lang in LANGUAGES
        )
        lines.append(
            f"| {what} ({overall['counted']:,}) | {_share(overall['flip_share'])} | "
            f"{only_whole}≤ {check['target']:.0%} | {per_lang} |"
        )
    return "\n".join(lines + measured_by(record)) + "\n"


def conversations(record: Record) -> str:
    """``topicguard evaluate GUARD conversations.jsonl --json``: per-turn false blocks and
    leaks with and without context, overall and per language."""
    result = record["result"]
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
            f"| {what} | {_share(m['false_block_rate'])} | {_share(m['leak_rate'])} | {per_lang} |"
        )
    return "\n".join(lines + measured_by(record)) + "\n"


def scaling(record: Record) -> str:
    """``benchmarks/load.py --compare``: the same load against ``serve --workers 1``,
    ``--workers 2`` and the Ray Serve deployment, one after the other in one run."""
    r = record["result"]
    names = {"workers_1": "`serve --workers 1`", "workers_2": "`serve --workers 2`"}
    lines = [
        "| server | clients | requests/s | per core | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in r["runs"].items():
        label = names.get(name, "`serve --ray --replicas 2`" if name == "ray" else name)
        lines.append(
            f"| {label} | {run['clients']} | {run['requests_per_second']:,.0f} | "
            f"{r['requests_per_second_per_core'][name]:,.0f} | {run['p50_ms']:.1f} | "
            f"{run['p99_ms']:.1f} | {run['errors']:,} |"
        )
    lines += [
        "",
        f"`--workers 2` against `--workers 1`: {r['workers_2_vs_1']:.2f}x the requests per "
        f"second, {r['cores']} cores shared by the servers and the load client.",
    ]
    return "\n".join(lines + measured_by(record)) + "\n"


def batch_score(record: Record) -> str:
    """``benchmarks/batch_score.py``: ``classify --input DIR --output DIR`` on the local engine
    and on Ray Data, the same partitions."""
    r = record["result"]
    lines = [
        f"{r['n']:,} messages in {r['partitions']} JSONL partitions, {r['cores']} cores.",
        "",
        "| engine | seconds | messages/s | per core |",
        "| --- | --- | --- | --- |",
    ]
    for engine, label in (("local", "local"), ("ray", "Ray Data")):
        run = r[engine]
        lines.append(
            f"| {label} | {run['seconds']:,.1f} | {run['messages_per_second']:,.0f} | "
            f"{run['messages_per_second_per_core']:,.0f} |"
        )
    if r["same_verdicts"]:
        same = "the same verdicts"
    elif "different_verdicts" in r:
        same = (
            f"{r['different_verdicts']:,} of {r['n']:,} verdicts different (an int8 graph "
            "quantises each batch with its own range; see Batches above)"
        )
    else:
        same = "some verdicts different (an int8 graph quantises each batch with its own range)"
    lines += [
        "",
        f"Ray Data at {r['ray_vs_local']:.2f}x the local engine's rate, {same}; Ray's start-up "
        f"({r['ray_start_seconds']:.1f} s) is not counted.",
    ]
    return "\n".join(lines + measured_by(record)) + "\n"


def capacity(record: Record) -> str:
    """The README's sizing paragraph, from ``benchmarks/load.py --compare``: requests per
    second per core as measured, and the cores 10,000 requests per second would need."""
    import math

    r = record["result"]
    per_core = {name: r["requests_per_second_per_core"][name] for name in r["runs"]}
    local = {name: rate for name, rate in per_core.items() if name.startswith("workers_")}
    best_name = max(local, key=lambda name: local[name])
    best = local[best_name]
    cores = math.ceil(10_000 / best)
    ray = (
        f"; Ray Serve with two replicas on the same cores: {per_core['ray']:,.0f}"
        if "ray" in per_core
        else ""
    )
    text = (
        f"Measured on {r['cores']} cores with 64 clients on the same machine: `serve --workers 1` "
        f"answers {per_core['workers_1']:,.0f} requests/s per core, `--workers 2` "
        f"{per_core['workers_2']:,.0f} ({r['workers_2_vs_1']:.2f}x the single process){ray}. "
        f"At the best of these, {best:,.0f} requests/s per core, 10,000 requests/s need about "
        f"{cores:,} cores: {math.ceil(cores / 2):,} two-core replicas, or "
        f"{math.ceil(cores / 8):,} eight-core machines with `--workers 8`, before headroom for "
        "peaks (the load client shared the cores here, so a dedicated server does better)."
    )
    return text + "\n\n" + measured_by(record)[1] + "\n"
