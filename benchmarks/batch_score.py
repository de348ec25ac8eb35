"""Batch scoring, local engine against Ray Data, on the same input: the bundled test texts
(and the reference project's reviewed queries, when ``TOPICGUARD_REFERENCE_DATA`` points at
them) repeated to ``--n`` messages in ``--partitions`` JSONL files. Prints JSON: seconds,
messages per second and per core for each engine, Ray's rate relative to local, and whether
both engines gave the same verdicts (the score may differ in its last digits: an int8
graph quantises each batch's activations with that batch's own range).

    python benchmarks/batch_score.py MODEL [--n 100000] [--partitions 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def texts() -> list[str]:
    from topicguard.data import read_texts, reference_data
    from topicguard.spec import bundled_example, load_spec

    spec = load_spec(bundled_example())
    found = [t for path in spec.test_paths() for t in read_texts(path)]
    reference = reference_data()
    if reference is not None:
        found += read_texts(reference)
    return found


def write_input(folder: Path, n: int, partitions: int) -> None:
    pool = texts()
    repeated = (pool * (n // len(pool) + 1))[:n]
    size = -(-n // partitions)
    for index in range(partitions):
        rows = repeated[index * size : (index + 1) * size]
        with (folder / f"part-{index:03d}.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in rows)


def verdicts(folder: Path) -> list[tuple[str, bool]]:
    import pandas as pd

    frame = pd.concat(pd.read_parquet(p) for p in sorted(folder.iterdir()))
    return sorted(zip(frame["text"], frame["allowed"], strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="JSON output (the only format)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.partitions < 1:
        parser.error("--n and --partitions must be at least 1")

    from topicguard.runtime import available_cores
    from topicguard.score import ScoreJob, find_partitions, score

    cores = available_cores()
    result: dict[str, object] = {"n": args.n, "partitions": args.partitions, "cores": cores}
    with tempfile.TemporaryDirectory(prefix="topicguard-batch-") as tmp:
        source = Path(tmp) / "in"
        source.mkdir()
        write_input(source, args.n, args.partitions)
        import ray

        start = time.perf_counter()  # Ray's start-up is timed apart from the scoring
        ray.init(include_dashboard=False, log_to_driver=False)
        result["ray_start_seconds"] = round(time.perf_counter() - start, 2)
        outputs = {}
        for engine in ("local", "ray"):
            out = Path(tmp) / engine
            job = ScoreJob(
                model_dir=args.model, partitions=find_partitions(source), output=out, engine=engine
            )
            start = time.perf_counter()
            count = score(job)
            seconds = time.perf_counter() - start
            result[engine] = {
                "seconds": round(seconds, 2),
                "messages": count,
                "messages_per_second": round(count / seconds, 1),
                "messages_per_second_per_core": round(count / seconds / cores, 1),
            }
            outputs[engine] = verdicts(out)
        local, on_ray = result["local"], result["ray"]
        assert isinstance(local, dict) and isinstance(on_ray, dict)
        rate = on_ray["messages_per_second"] / local["messages_per_second"]
        result["ray_vs_local"] = round(rate, 2)
        result["same_verdicts"] = outputs["local"] == outputs["ray"]
        # int8 graphs quantise each batch's activations with its own range: a text near the
        # threshold can land on either side when the engines batch it differently
        apart = Counter(outputs["local"]) - Counter(outputs["ray"])
        result["different_verdicts"] = sum(apart.values())
        ray.shutdown()
    print(json.dumps(result))
    return 0 if result["same_verdicts"] else 1


if __name__ == "__main__":
    sys.exit(main())
