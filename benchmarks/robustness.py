"""How often a guard's verdict flips when text is added around a test message (issue #25,
point 5): blocked messages hidden behind or in front of an on-topic parcel sentence
(``attack``: target at most 5% flips), on-topic messages with a greeting or thanks
(``greeting_thanks``: at most 2%), blocked messages with "please", "asap" and the like appended
(``harmless_words``: at most 2%). Flips count only messages the guard got right on their own;
the compositions live in :mod:`topicguard.robustness`.

    python benchmarks/robustness.py --model runs/bench/light-42 [--data FILE]... [--spec SPEC]
        [--limit N] [--seed 42] [--json]
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import _common


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a trained guard folder")
    parser.add_argument(
        "--data", type=Path, nargs="+", help="labelled test files (default: the spec's test paths)"
    )
    parser.add_argument("--spec", type=Path, help="spec whose test paths to use (default: bundled)")
    parser.add_argument("--limit", type=int, help="a seeded sample of at most N test messages")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sample and sentences")
    parser.add_argument("--backend", default="auto", help="auto, torch, onnx or onnx-int8")
    args = parser.parse_args(argv)

    from topicguard import TopicGuard, TopicGuardError
    from topicguard.data import read_datasets
    from topicguard.robustness import measure
    from topicguard.spec import bundled_example, load_spec

    try:
        paths = args.data or load_spec(args.spec or bundled_example()).test_paths()
        examples = read_datasets(paths)
        if args.limit is not None and args.limit < len(examples):
            keep = sorted(random.Random(args.seed).sample(range(len(examples)), args.limit))
            examples = [examples[i] for i in keep]
        guard = TopicGuard.load(args.model, backend=args.backend)
        started = time.perf_counter()
        report = measure(
            lambda texts: [v.allowed for v in guard.classify(texts)], examples, seed=args.seed
        )
        seconds = time.perf_counter() - started
        # the same guard judging every message only as a whole: what the sentence check buys
        guard.sentence_check = None
        whole = measure(
            lambda texts: [v.allowed for v in guard.classify(texts)], examples, seed=args.seed
        ).to_dict()
    except TopicGuardError as exc:
        return _common.failed(exc)
    result = {
        "model": str(args.model),
        "backend": guard.backend_name,
        "data": [os.path.relpath(p) for p in paths],
        "seconds": round(seconds, 2),
        **report.to_dict(),
        "whole_message_only": {
            family: whole[family]["overall"]["flip_share"]
            for family in ("attack", "greeting_thanks", "harmless_words")
        },
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        _print(result)
    return 0


def _print(result: dict[str, Any]) -> None:
    print(f"{result['model']} on {', '.join(result['data'])}: {result['n_messages']} messages")
    for family in ("attack", "greeting_thanks", "harmless_words"):
        values = result[family]
        verdict = {True: "meets it", False: "misses it", None: "no data"}[values["meets_target"]]
        print(f"\n{family} (target: at most {values['target']:.0%} flips: {verdict})")
        rows = [("all", values["overall"]), *values["by_language"].items()]
        for name, row in rows:
            through = row.get("let_through_share")
            extra = "" if through is None else f"  let through {through:.1%}"
            print(
                f"  {name:4s} flips {_pct(row['flip_share'])} ({row['flips']}/{row['counted']})"
                f"{extra}"
            )
        for example in values["flipped_examples"][:3]:
            print(f"    e.g. {example['composed']!r}")


def _pct(share: float | None) -> str:
    return "  n/a" if share is None else f"{share:5.1%}"


if __name__ == "__main__":
    raise SystemExit(main())
