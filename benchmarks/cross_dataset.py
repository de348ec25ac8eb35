"""Honest cross-dataset evaluation: train on one team's data, test on another's.

A score on a random split of one's own data measures memory as much as generalisation.
Here each direction trains on one dataset and tests on the other, written by other people
in another style:

- bundled -> reference: train on the bundled example's English training rows, evaluate on
  all 2,207 reviewed rows of the reference project (labels: DeepSeek R1's verdicts);
- reference -> bundled: train on all reviewed reference rows, evaluate on the bundled
  example's held-out English test rows.

    python benchmarks/cross_dataset.py [--base-model ID|PATH] [--reference FILE] [--limit N]
        [--json]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import _common


def main(argv: list[str] | None = None) -> int:
    from topicguard.training import TrainConfig

    parser = _common.parser(__doc__, "reference", "base-model", "epochs", "seed", "limit")
    args = parser.parse_args(argv)
    _common.quiet_logging(args.json)

    from topicguard import TopicGuard, TopicGuardError
    from topicguard.evaluate import evaluate
    from topicguard.training import train

    config = TrainConfig(
        base_model=args.base_model, epochs=args.epochs, seed=args.seed, soup=1
    )  # one run, as the README's table was measured (train's default: 2)
    results = {}
    try:
        # the reference is English: compare with the bundled English rows, the fast model's
        bundled_train = _common.sample(_common.bundled("train", english_only=True), args.limit)
        bundled_test = _common.sample(_common.bundled("test", english_only=True), args.limit)
        reference = _common.sample(_common.read_reference(args.reference), args.limit)
        directions = {
            "bundled_to_reference": (bundled_train, reference),
            "reference_to_bundled": (reference, bundled_test),
        }
        with tempfile.TemporaryDirectory() as tmp:
            for name, (train_rows, test_rows) in directions.items():
                result = train(train_rows, Path(tmp) / name, config)
                evaluation = evaluate(TopicGuard.load(Path(tmp) / name), test_rows)
                m = evaluation.metrics
                results[name] = {
                    "f1": round(m["f1"], 4),
                    "f1_weighted": round(m["f1_weighted"], 4),
                    "accuracy": round(m["accuracy"], 4),
                    "false_block_rate": round(m["false_block_rate"], 4),
                    "leak_rate": round(m["leak_rate"], 4),
                    "roc_auc": round(m["roc_auc"], 4),
                    "n_train": result.n_train + result.n_validation,
                    "n_test": len(test_rows),
                    "train_seconds": round(result.train_seconds, 1),
                    "worst_errors": [
                        {k: e[k] for k in ("error", "score", "text")}
                        for e in evaluation.errors()[:5]
                    ],
                }
    except (TopicGuardError, _common.MissingReference) as exc:
        return _common.failed(exc)
    if args.json:
        print(json.dumps({"base_model": args.base_model, "directions": results}))
        return 0
    print(f"{'direction':<22} {'F1':>7} {'false blocks':>13} {'leaks':>7} {'n_test':>7}")
    for name, r in results.items():
        print(
            f"{name:<22} {r['f1']:>7.4f} {r['false_block_rate']:>13.2%} "
            f"{r['leak_rate']:>7.2%} {r['n_test']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
