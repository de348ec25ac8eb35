"""Every cheaper alternative to fine-tuning, measured side by side on the same splits.

Methods (each picks its operating points on a validation part of its training data):

- ``tfidf_logreg``: TF-IDF of words and character 2-5-grams + logistic regression;
- ``embedding_logreg``: the base model frozen, mean-pooled, + logistic regression (the
  SetFit-head idea without contrastive tuning);
- ``nearest_example``: embed every training query; a text is allowed when its nearest
  on-topic example is closer than its nearest off-topic one by a margin chosen on
  validation (the semantic-router idea);
- ``fine_tuned``: ``topicguard train`` (PyTorch), and ``fine_tuned_int8`` its int8 ONNX copy.

Per method: F1, false-block and leak rates at its default operating point, the leak rate
when the threshold is set on validation for at most 1% false blocks (and the false-block
rate that came out on test), single-query p50 latency, and training time.

Tasks: ``reference`` (the reference data, leakage-aware 80/20 split) and ``cross`` (train
on the bundled English data, test on all reviewed reference rows).

    python benchmarks/compare.py [--task reference|cross|both] [--reference FILE] [--limit N]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common
import numpy as np

TARGET_FALSE_BLOCK = 0.01
LATENCY_QUERIES = 200

Scorer = Callable[[list[str]], np.ndarray]


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__, "reference", "base-model", "epochs", "limit")
    parser.add_argument("--task", choices=["reference", "cross", "both"], default="both")
    args = parser.parse_args(argv)
    _common.quiet_logging(args.json)

    from topicguard import TopicGuardError

    try:
        tasks = _tasks(args)
        results = {
            name: _compare(train_rows, test_rows, args) for name, (train_rows, test_rows) in tasks
        }
    except (TopicGuardError, _common.MissingReference) as exc:
        return _common.failed(exc)
    if args.json:
        print(json.dumps(results))
        return 0
    for name, methods in results.items():
        print(f"\n{name}: {methods.pop('_split')}")
        print(
            f"{'method':<18} {'F1':>6} {'false blk':>9} {'leaks':>7} {'leaks@1%':>9} "
            f"{'(fb got)':>9} {'p50 ms':>7} {'train s':>8}"
        )
        for method, r in methods.items():
            print(
                f"{method:<18} {r['f1']:>6.3f} {r['false_block_rate']:>9.2%} "
                f"{r['leak_rate']:>7.2%} {r['leak_rate_at_1pct']:>9.2%} "
                f"{r['false_block_rate_at_1pct']:>9.2%} {r['p50_ms']:>7.2f} "
                f"{r['train_seconds']:>8.1f}"
            )
    return 0


def _tasks(args: argparse.Namespace) -> list[tuple[str, tuple[list[Any], list[Any]]]]:
    from topicguard.leakage import split_examples

    reference = _common.sample(_common.read_reference(args.reference), args.limit)
    tasks = []
    if args.task in ("reference", "both"):
        train_rows, test_rows = split_examples(reference, test_size=0.2, seed=42)
        tasks.append(("reference", (train_rows, test_rows)))
    if args.task in ("cross", "both"):
        bundled = _common.bundled("train", english_only=True)
        tasks.append(("cross", (_common.sample(bundled, args.limit), reference)))
    return tasks


def _compare(train_rows: list[Any], test_rows: list[Any], args: argparse.Namespace) -> dict:
    from topicguard.leakage import split_examples
    from topicguard.training import TrainConfig

    # the same validation rows that `train` holds out, for every method
    # one fine-tuning run, as the README's tables were measured (train's default: 2)
    config = TrainConfig(base_model=args.base_model, epochs=args.epochs, soup=1)
    fit_rows, val_rows = split_examples(
        train_rows, test_size=config.validation_size, seed=config.seed
    )
    results: dict[str, Any] = {
        "_split": f"{len(fit_rows)} train, {len(val_rows)} validation, {len(test_rows)} test"
    }
    embed = _embedder(args.base_model)
    cheap = {
        "tfidf_logreg": lambda: _tfidf(fit_rows),
        "embedding_logreg": lambda: _embedding_logreg(fit_rows, embed),
        "nearest_example": lambda: _nearest(fit_rows, embed),
    }
    for name, build in cheap.items():
        logging.info("%s ...", name)
        start = time.perf_counter()
        scorer = build()
        seconds = time.perf_counter() - start
        results[name] = _measure(scorer, val_rows, test_rows, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        results.update(_fine_tuned(train_rows, val_rows, test_rows, config, Path(tmp)))
    return results


def _measure(
    scorer: Scorer, val_rows: list[Any], test_rows: list[Any], train_seconds: float
) -> dict[str, float]:
    """Metrics at the accuracy threshold and at the 1%-false-block threshold, both chosen on
    validation, and single-query latency."""
    from topicguard.calibrate import Objective, choose_threshold
    from topicguard.metrics import compute_metrics

    val_labels = np.array([e.label for e in val_rows])
    test_labels = np.array([e.label for e in test_rows])
    val_scores = scorer([e.text for e in val_rows])
    test_scores = scorer([e.text for e in test_rows])
    default = compute_metrics(test_labels, test_scores, choose_threshold(val_labels, val_scores))
    strict = compute_metrics(
        test_labels,
        test_scores,
        choose_threshold(
            val_labels, val_scores, Objective("target_false_block", TARGET_FALSE_BLOCK)
        ),
    )
    texts = [e.text for e in test_rows][:LATENCY_QUERIES]
    times = []
    for text in texts:
        start = time.perf_counter()
        scorer([text])
        times.append(time.perf_counter() - start)
    return {
        "f1": round(default["f1"], 4),
        "false_block_rate": round(default["false_block_rate"], 4),
        "leak_rate": round(default["leak_rate"], 4),
        "leak_rate_at_1pct": round(strict["leak_rate"], 4),
        "false_block_rate_at_1pct": round(strict["false_block_rate"], 4),
        "p50_ms": round(float(np.median(times)) * 1000, 3),
        "train_seconds": round(train_seconds, 1),
    }


def _tfidf(rows: Sequence[Any]) -> Scorer:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    model = make_pipeline(
        make_union(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1),
            TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=2),
        ),
        LogisticRegression(C=10, max_iter=2000),
    )
    model.fit([e.text for e in rows], [e.label for e in rows])
    return lambda texts: model.predict_proba(texts)[:, 1]


def _embedder(base_model: str) -> Callable[[list[str]], np.ndarray]:
    """Mean-pooled, L2-normalised sentence embeddings from the frozen base model."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from topicguard.models import quiet_transformers, resolve_base_model

    source = resolve_base_model(base_model)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source).eval()

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                batch = tokenizer(
                    texts[start : start + 64],
                    padding=True,
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.empty((0, 0))

    return embed


def _embedding_logreg(rows: Sequence[Any], embed: Callable[[list[str]], np.ndarray]) -> Scorer:
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(C=10, max_iter=3000)
    head.fit(embed([e.text for e in rows]), [e.label for e in rows])
    return lambda texts: head.predict_proba(embed(texts))[:, 1]


def _nearest(rows: Sequence[Any], embed: Callable[[list[str]], np.ndarray]) -> Scorer:
    vectors = embed([e.text for e in rows])
    labels = np.array([e.label for e in rows])
    on_topic, off_topic = vectors[labels], vectors[~labels]

    def score(texts: list[str]) -> np.ndarray:
        queries = embed(texts)
        gap = (queries @ on_topic.T).max(1) - (queries @ off_topic.T).max(1)
        return (gap + 1) / 2  # similarity gap in [-1, 1] onto [0, 1]; only the order matters

    return score


def _fine_tuned(
    train_rows: list[Any], val_rows: list[Any], test_rows: list[Any], config: Any, tmp: Path
) -> dict[str, Any]:
    from topicguard import TopicGuard
    from topicguard.export import export_onnx
    from topicguard.training import train

    logging.info("fine_tuned ...")
    result = train(train_rows, tmp / "guard", config)
    export_start = time.perf_counter()
    export_onnx(tmp / "guard", int8=True, texts=[e.text for e in val_rows])
    export_seconds = time.perf_counter() - export_start
    out = {}
    for name, backend, seconds in (
        ("fine_tuned", "torch", result.train_seconds),
        ("fine_tuned_int8", "onnx-int8", result.train_seconds + export_seconds),
    ):
        guard = TopicGuard.load(tmp / "guard", backend=backend)
        out[name] = _measure(lambda texts, g=guard: g.scores(texts), val_rows, test_rows, seconds)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
