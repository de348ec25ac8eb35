"""Checkpoint averaging: does keeping the mean of the last epochs' weights help?

For each seed, the fast model is trained twice on the bundled example's English training
rows, identically except for what is kept at the end: the best single epoch on validation
(``--average-last 1``, the old rule) or the shipped rule (the mean of the last three
epochs' weights unless one epoch beats it on validation by over one standard error). Both
are evaluated on the bundled English test rows and on all 2,207 reviewed reference rows
(a different team's data: the closer test of how a guard meets unseen writing), and the
verdicts of the two seeds are compared: fewer changed verdicts = a steadier recipe.

    python benchmarks/averaging.py [--seeds 42 43] [--reference FILE] [--limit N] [--json]
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import _common


def main(argv: list[str] | None = None) -> int:
    from topicguard.training import TrainConfig

    defaults = TrainConfig()
    parser = _common.parser(__doc__, "reference", "base-model", "limit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    args = parser.parse_args(argv)
    _common.quiet_logging(args.json)

    from topicguard import TopicGuard, TopicGuardError
    from topicguard.evaluate import evaluate
    from topicguard.training import train

    rules = {"best_epoch": 1, "averaged": defaults.average_last}
    results: dict[str, dict[str, object]] = {rule: {} for rule in rules}
    verdicts: dict[str, list[list[bool]]] = {rule: [] for rule in rules}
    try:
        english = _common.bundled("train", english_only=True)
        test_sets = {
            "bundled_test": _common.bundled("test", english_only=True),
            "reference": _common.read_reference(args.reference),
        }
        if args.limit:
            english = english[:: max(len(english) // args.limit, 1)]
            test_sets = {k: v[:: max(len(v) // args.limit, 1)] for k, v in test_sets.items()}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in args.seeds:
                for rule, average_last in rules.items():
                    # one run per model: this compares epoch averaging alone, not soups
                    config = TrainConfig(
                        base_model=args.base_model, seed=seed, average_last=average_last, soup=1
                    )
                    out = Path(tmp) / f"{rule}-{seed}"
                    trained = train(english, out, config)
                    guard = TopicGuard.load(out, backend="torch")
                    row: dict[str, object] = {"kept": trained.kept}
                    seen: list[bool] = []
                    for name, rows in test_sets.items():
                        evaluation = evaluate(guard, rows)
                        m = evaluation.metrics
                        row[name] = {
                            "f1": round(m["f1"], 4),
                            "errors": int(round((1 - m["accuracy"]) * m["n"])),
                            "false_block_rate": round(m["false_block_rate"], 4),
                            "leak_rate": round(m["leak_rate"], 4),
                        }
                        seen += [bool(x) for x in evaluation.predicted]
                    results[rule][str(seed)] = row
                    verdicts[rule].append(seen)
                    logging.info("seed %d, %s: %s", seed, rule, row)
    except (TopicGuardError, _common.MissingReference) as exc:
        return _common.failed(exc)
    for rule, runs in verdicts.items():
        changed = [sum(a != b for a, b in zip(runs[0], run, strict=True)) for run in runs[1:]]
        results[rule]["verdicts_changed_between_seeds"] = changed
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for rule, per_seed in results.items():
            print(rule, json.dumps(per_seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
