"""Evaluation reports on disk: metrics.json, errors.csv, report.md, a self-contained
report.html (plots embedded) and the PNG plots.

Written only when asked (``evaluate --report DIR``); each file is written atomically. When the
model folder holds ``bench.json`` (written by ``topicguard bench``), its latency table is
part of the report.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topicguard._io import atomic_write_text
from topicguard.metrics import HEADLINE_METRICS, reliability_bins

if TYPE_CHECKING:
    from topicguard.evaluate import Evaluation

__all__ = ["write_report"]

PLOTS = {
    "confusion_matrix.png": "Confusion matrix at the stored threshold",
    "precision_recall.png": "Precision-recall curve (on topic is positive), operating point marked",
    "roc_curve.png": "ROC curve, operating point marked",
    "score_histogram.png": "Score histogram per class",
    "reliability.png": "Reliability diagram: predicted vs observed on-topic share",
}
WORST = 10  # rows shown per error kind


def write_report(
    evaluation: Evaluation,
    out_dir: str | Path,
    *,
    title: str = "topicguard evaluation",
    bench: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the report files into ``out_dir`` and return their paths. ``bench`` is the
    ``topicguard bench --json`` object, shown as a latency table when given."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = evaluation.to_dict()
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "errors.csv", _errors_csv(evaluation.errors()))
    written = [out / "metrics.json", out / "errors.csv"]
    written += _plots(evaluation, out)
    atomic_write_text(out / "report.md", _markdown(evaluation, summary, title, bench))
    atomic_write_text(out / "report.html", _html(evaluation, summary, title, bench, out))
    written += [out / "report.md", out / "report.html"]
    return written


def _errors_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["error", "score", "label", "category", "lang", "source", "text"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _plots(evaluation: Evaluation, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import precision_recall_curve, roc_curve

    labels = np.array([e.label for e in evaluation.examples], dtype=bool)
    scores = evaluation.scores
    predicted = evaluation.predicted
    paths = []

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    matrix = np.array(
        [
            [(~labels & ~predicted).sum(), (~labels & predicted).sum()],
            [(labels & ~predicted).sum(), (labels & predicted).sum()],
        ]
    )
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=14)
    ax.set_xticks([0, 1], ["blocked", "allowed"])
    ax.set_yticks([0, 1], ["off topic", "on topic"])
    ax.set_xlabel("guard's decision")
    ax.set_ylabel("true label")
    ax.set_title(f"Confusion matrix (threshold {evaluation.threshold:.2f})")
    paths.append(_save(fig, out / "confusion_matrix.png"))

    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    if labels.any() and (~labels).any():
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.plot(recall, precision, color="tab:blue")
        ax.scatter(
            [evaluation.metrics["recall"]],
            [evaluation.metrics["precision"]],
            color="tab:red",
            zorder=3,
            label="stored threshold",
        )
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "needs both classes", ha="center", va="center")
    ax.set_xlabel("recall (on-topic let through)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall")
    paths.append(_save(fig, out / "precision_recall.png"))

    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    if labels.any() and (~labels).any():
        false_pos, true_pos, _ = roc_curve(labels, scores)
        ax.plot(false_pos, true_pos, color="tab:blue")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.scatter(
            [evaluation.metrics["leak_rate"]],
            [evaluation.metrics["recall"]],
            color="tab:red",
            zorder=3,
            label="stored threshold",
        )
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "needs both classes", ha="center", va="center")
    ax.set_xlabel("leak rate (off-topic let through)")
    ax.set_ylabel("on-topic let through")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"ROC (AUC {evaluation.metrics['roc_auc']:.3f})")
    paths.append(_save(fig, out / "roc_curve.png"))

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    bins = np.linspace(0, 1, 26).tolist()
    ax.hist(scores[labels], bins=bins, alpha=0.6, color="tab:green", label="on topic")
    ax.hist(scores[~labels], bins=bins, alpha=0.6, color="tab:red", label="off topic")
    ax.axvline(evaluation.threshold, color="black", linestyle="--", label="threshold")
    ax.set_yscale("log")
    ax.set_xlabel("score (probability on topic)")
    ax.set_ylabel("queries (log scale)")
    ax.legend(loc="upper center")
    ax.set_title("Scores per class")
    paths.append(_save(fig, out / "score_histogram.png"))

    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    edges = np.linspace(0, 1, 11)
    bins = reliability_bins(labels, scores, 10)
    centres, observed, counts = zip(*bins, strict=True) if bins else ((), (), ())
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    ax.plot(centres, observed, marker="o", color="tab:blue", label="this guard")
    for x, y, n in zip(centres, observed, counts, strict=True):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xticks(edges[::2])
    ax.set_xlabel("mean score in bin")
    ax.set_ylabel("share on topic")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left")
    ax.set_title(f"Reliability (calibration error {evaluation.metrics['calibration_error']:.3f})")
    paths.append(_save(fig, out / "reliability.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import os
    import tempfile

    import matplotlib.pyplot as plt

    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _markdown(
    evaluation: Evaluation, summary: dict[str, Any], title: str, bench: dict[str, Any] | None
) -> str:
    m = evaluation.metrics
    lines = [
        f"# {title}",
        "",
        f"{int(m['n'])} queries, threshold {evaluation.threshold:.3f}.",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key in HEADLINE_METRICS:
        lines.append(f"| {key} | {m[key]:.4f} |" if m[key] == m[key] else f"| {key} | n/a |")
    for key, heading in (("categories", "Per category"), ("languages", "Per language")):
        if key in summary:
            lines += [
                "",
                f"## {heading}",
                "",
                "| group | n | on topic | errors | false blocks | leaks | accuracy |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            for name, g in summary[key].items():
                lines.append(
                    f"| {name} | {g['n']} | {g['on_topic']} | {g['errors']} | "
                    f"{g['false_blocks']} | {g['leaks']} | {g['accuracy']:.3f} |"
                )
    errors = evaluation.errors()
    for kind, heading in (("false_block", "Worst false blocks"), ("leak", "Worst leaks")):
        rows = [r for r in errors if r["error"] == kind][:WORST]
        lines += ["", f"## {heading} ({_count(errors, kind)} in all, all in errors.csv)", ""]
        if rows:
            lines += ["| score | category | text |", "| --- | --- | --- |"]
            for row in rows:
                text = row["text"].replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {row['score']:.3f} | {row['category'] or ''} | {text[:160]} |")
        else:
            lines.append("None.")
    if bench:
        lines += ["", "## Latency (from bench.json)", "", _bench_caption(bench), ""]
        lines += ["| backend | p50 ms | p95 ms | p99 ms | queries/s | speed-up |"]
        lines += ["| --- | --- | --- | --- | --- | --- |"]
        for name, r in bench.get("backends", {}).items():
            lines.append(
                f"| {name} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['throughput_qps']:.0f} | {r.get('speedup_vs_pipeline', 1):.1f}x |"
            )
    lines += ["", "## Plots", ""]
    lines += [f"![{caption}]({name})" for name, caption in PLOTS.items()]
    return "\n".join(lines) + "\n"


def _count(errors: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for r in errors if r["error"] == kind)


def _bench_caption(bench: dict[str, Any]) -> str:
    return (
        f"{bench.get('n_single', '?')} single queries, batches of {bench.get('batch_size', '?')}, "
        f"{bench.get('threads', '?')} threads; speed-up is against transformers.pipeline."
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.3em .6em;
text-align:right;font-size:.92em}th{background:#f4f4f4}td.t{text-align:left;max-width:620px}
.kpi{display:flex;gap:1em;flex-wrap:wrap}.kpi div{border:1px solid #ddd;border-radius:6px;
padding:.6em 1em;min-width:8em}.kpi b{display:block;font-size:1.5em}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-size:.85em;color:#555}
"""


def _html(
    evaluation: Evaluation,
    summary: dict[str, Any],
    title: str,
    bench: dict[str, Any] | None,
    out: Path,
) -> str:
    m = evaluation.metrics
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{int(m['n'])} queries, threshold {evaluation.threshold:.3f} "
        "(a score at or above it is allowed; scores are calibrated probabilities).</p>",
        "<div class='kpi'>",
    ]
    for key, label, fmt in (
        ("f1", "F1", "{:.3f}"),
        ("accuracy", "accuracy", "{:.3f}"),
        ("false_block_rate", "false blocks", "{:.2%}"),
        ("leak_rate", "leaks", "{:.2%}"),
        ("roc_auc", "ROC AUC", "{:.3f}"),
        ("calibration_error", "calibration error", "{:.3f}"),
    ):
        value = m[key]
        parts.append(f"<div>{label}<b>{'n/a' if value != value else fmt.format(value)}</b></div>")
    parts.append("</div><h2>All metrics</h2><table><tr><th>metric</th><th>value</th></tr>")
    for key in HEADLINE_METRICS:
        shown = "n/a" if m[key] != m[key] else f"{m[key]:.4f}"
        parts.append(f"<tr><td class='t'>{key}</td><td>{shown}</td></tr>")
    parts.append("</table><h2>Plots</h2><div class='plots'>")
    for name, caption in PLOTS.items():
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img src='data:image/png;base64,{data}' alt='{esc(caption)}' "
            f"data-file='{name}'><figcaption>{esc(caption)} ({name})</figcaption></figure>"
        )
    parts.append("</div>")
    for key, heading in (("categories", "Per category"), ("languages", "Per language")):
        if key not in summary:
            continue
        parts.append(
            f"<h2>{heading}</h2><table><tr><th>group</th><th>n</th><th>on topic</th>"
            "<th>errors</th><th>false blocks</th><th>leaks</th><th>accuracy</th></tr>"
        )
        for name, g in summary[key].items():
            parts.append(
                f"<tr><td class='t'>{esc(str(name))}</td><td>{g['n']}</td><td>{g['on_topic']}</td>"
                f"<td>{g['errors']}</td><td>{g['false_blocks']}</td><td>{g['leaks']}</td>"
                f"<td>{g['accuracy']:.3f}</td></tr>"
            )
        parts.append("</table>")
    errors = evaluation.errors()
    for kind, heading in (("false_block", "Worst false blocks"), ("leak", "Worst leaks")):
        rows = [r for r in errors if r["error"] == kind][:WORST]
        parts.append(f"<h2>{heading} ({_count(errors, kind)} in all, all in errors.csv)</h2>")
        if not rows:
            parts.append("<p>None.</p>")
            continue
        parts.append("<table><tr><th>score</th><th>category</th><th>text</th></tr>")
        for row in rows:
            parts.append(
                f"<tr><td>{row['score']:.3f}</td><td class='t'>{esc(row['category'] or '')}</td>"
                f"<td class='t'>{esc(row['text'][:300])}</td></tr>"
            )
        parts.append("</table>")
    if bench:
        parts.append(f"<h2>Latency</h2><p>{esc(_bench_caption(bench))}</p>")
        parts.append(
            "<table><tr><th>backend</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>"
            "<th>queries/s</th><th>speed-up</th></tr>"
        )
        for name, r in bench.get("backends", {}).items():
            parts.append(
                f"<tr><td class='t'>{esc(name)}</td><td>{r['p50_ms']:.2f}</td>"
                f"<td>{r['p95_ms']:.2f}</td><td>{r['p99_ms']:.2f}</td>"
                f"<td>{r['throughput_qps']:.0f}</td>"
                f"<td>{r.get('speedup_vs_pipeline', 1):.1f}x</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
