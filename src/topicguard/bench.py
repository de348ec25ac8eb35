"""Latency and throughput of a guard, every backend in one run, against the reference's
inference path (``transformers.pipeline``) measured in the same process.

Single-query latency is timed one real query at a time (p50/p95/p99, and ``single_qps``,
the queries answered per second that way); throughput classifies the same queries in
batches (``throughput_qps``). ``batch_vs_single`` is how many times more queries a second
batches answer than single queries do; ``batch_vs_p50`` compares batches with the median
query alone (the unsure few that get a second opinion are in the batches, not in the
median). Speed-ups are ratios to the pipeline's p50 from this run, so they hold even on a
noisy machine where absolute times drift.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from topicguard.runtime import TopicGuard

__all__ = ["benchmark", "benchmark_texts"]

logger = logging.getLogger(__name__)


def benchmark_texts(limit: int = 500, lang: str = "en") -> list[str]:
    """Real queries to time: the bundled example's held-out test texts in ``lang``."""
    from topicguard.data import read_dataset
    from topicguard.spec import bundled_example, load_spec

    spec = load_spec(bundled_example())
    rows = [e for p in spec.test_paths() for e in read_dataset(p)]
    return [e.text for e in rows if (e.lang or "en") == lang][:limit]


def benchmark(
    model_dir: str | Path,
    *,
    backends: Sequence[str] | None = None,
    texts: Sequence[str] | None = None,
    single_queries: int = 300,
    batch_size: int = 64,
    threads: int | None = None,
    include_pipeline: bool = True,
    second_opinion: bool = True,
) -> dict[str, Any]:
    """``{"backends": {name: {p50_ms, p95_ms, p99_ms, throughput_qps, speedup_vs_pipeline}}}``
    for each requested (default: every available) backend, plus ``pipeline``."""
    model_dir = Path(model_dir)
    texts = list(texts) if texts else benchmark_texts()
    singles = _repeat(texts, single_queries)
    if backends is None:
        backends = ["torch"] + [
            b
            for b, f in (("onnx", "model.onnx"), ("onnx-int8", "model.int8.onnx"))
            if (model_dir / "onnx" / f).is_file()
        ]
    results: dict[str, dict[str, float]] = {}
    guard = None
    if include_pipeline:
        results["pipeline"] = _pipeline(model_dir, singles, texts, batch_size, threads)
    for name in backends:
        guard = TopicGuard.load(
            model_dir, backend=name, threads=threads, second_opinion=second_opinion
        )
        results[name] = _measure(
            lambda batch, g=guard: g.scores(batch, batch_size=batch_size),
            singles,
            texts,
            batch_size,
        )
    if "pipeline" in results:
        base = results["pipeline"]["p50_ms"]
        for values in results.values():
            values["speedup_vs_pipeline"] = round(base / values["p50_ms"], 2)
    if guard is None:
        guard = TopicGuard.load(model_dir, threads=threads, second_opinion=second_opinion)
    languages = _languages(guard, batch_size) if guard.multilingual is not None else {}
    return {
        "model": str(model_dir),
        "n_single": len(singles),
        "n_batch": len(texts),
        "batch_size": batch_size,
        "threads": _threads(threads),
        "second_opinion": guard.second_opinion_band is not None,
        "backends": results,
        "languages": languages,
    }


def _languages(guard: TopicGuard, batch_size: int) -> dict[str, dict[str, float]]:
    """The whole routed guard (language detection included) timed on each of its languages
    in the bundled test split."""
    out = {}
    for lang in guard.languages:
        texts = benchmark_texts(lang=lang)
        if texts:
            out[lang] = _measure(
                lambda batch: guard.scores(batch, batch_size=batch_size),
                _repeat(texts, 100),
                texts,
                batch_size,
            )
    return out


def _repeat(texts: list[str], n: int) -> list[str]:
    """``n`` texts, cycling through ``texts``."""
    return (texts * (n // max(len(texts), 1) + 1))[:n]


def _measure(run: Any, singles: list[str], texts: list[str], batch_size: int) -> dict[str, float]:
    import numpy as np

    for text in singles[:20]:  # warm caches and allocators
        run([text])
    times = []
    for text in singles:
        start = time.perf_counter()
        run([text])
        times.append(time.perf_counter() - start)
    run(texts[:batch_size])
    start = time.perf_counter()
    run(texts)
    elapsed = time.perf_counter() - start
    ms = np.array(times) * 1000
    batched = len(texts) / elapsed
    single = len(times) / sum(times)  # the rate of queries sent one at a time
    p50 = float(np.percentile(ms, 50))
    return {
        "p50_ms": round(p50, 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "single_qps": round(single, 1),
        "throughput_qps": round(batched, 1),
        "batch_vs_single": round(batched / single, 2),
        "batch_vs_p50": round(batched * p50 / 1000, 2),
    }


def _pipeline(
    model_dir: Path, singles: list[str], texts: list[str], batch_size: int, threads: int | None
) -> dict[str, float]:
    from transformers import pipeline

    from topicguard.models import quiet_transformers

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    with quiet_transformers():
        classifier = pipeline("text-classification", model=str(model_dir), device=-1)
    return _measure(
        lambda batch: classifier(batch, batch_size=batch_size), singles, texts, batch_size
    )


def _threads(threads: int | None) -> int:
    if threads is not None:
        return threads
    import torch

    return int(torch.get_num_threads())
