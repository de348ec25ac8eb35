"""Evaluation reports on disk: metrics.json, errors.csv, report.md and PNG plots.

Written only when asked (``evaluate --report DIR``); each file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topicguard._io import atomic_write_text
from topicguard.metrics import HEADLINE_METRICS

if TYPE_CHECKING:
    from topicguard.evaluate import Evaluation

__all__ = ["write_report"]

PLOTS = {
    "confusion_matrix.png": "Confusion matrix",
    "precision_recall.png": "Precision-recall curve (on topic is positive)",
    "score_histogram.png": "Score histogram per class",
}


def write_report(
    evaluation: Evaluation, out_dir: str | Path, *, title: str = "topicguard evaluation"
) -> list[Path]:
    """Write the report files into ``out_dir`` and return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = evaluation.to_dict()
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "errors.csv", _errors_csv(evaluation.errors()))
    written = [out / "metrics.json", out / "errors.csv"]
    written += _plots(evaluation, out)
    atomic_write_text(out / "report.md", _markdown(evaluation, summary, title))
    written.append(out / "report.md")
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
    from sklearn.metrics import precision_recall_curve

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


def _markdown(evaluation: Evaluation, summary: dict[str, Any], title: str) -> str:
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
    lines += ["", f"## Most confident errors ({len(errors)} in all, full list in errors.csv)", ""]
    if errors:
        lines += ["| error | score | category | text |", "| --- | --- | --- | --- |"]
        for row in errors[:20]:
            text = row["text"].replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {row['error']} | {row['score']:.3f} | {row['category'] or ''} | {text[:160]} |"
            )
    else:
        lines.append("None.")
    lines += ["", "## Plots", ""]
    lines += [f"![{caption}]({name})" for name, caption in PLOTS.items()]
    return "\n".join(lines) + "\n"
