"""Checkpoint averaging: does keeping the mean of the last epochs' weights help?

For each seed, the fast model is trained twice on the bundled example's English training
rows, identically except for what is kept at the end: the best single epoch on validation
(``--average-last 1``, the old rule) or the shipped rule (the mean of the last three
epochs' weights unless one epoch beats it on validation by over one standard error). Both
are evaluated on the bundled English test rows and on all 2,207 reviewed reference rows
(a different team's data: the closer test of how a guard meets unseen writing), and the
verdicts of the two seeds are compared: fewer changed verdicts = a steadier recipe.

    python benchmarks/averaging.py [--seeds 42 43] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference"


def main(argv: list[str] | None = None) -> int:
    from topicguard.train import TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE / "rev_guardrail_r1.xlsx")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--base-model", default=defaults.base_model)
    parser.add_argument("--limit", type=int, default=None, help="rows per dataset (a quick look)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(message)s")

    from topicguard import TopicGuard, TopicGuardError
    from topicguard.data import read_dataset, read_datasets
    from topicguard.evaluate import evaluate
    from topicguard.spec import bundled_example, load_spec
    from topicguard.train import train

    rules = {"best_epoch": 1, "averaged": defaults.average_last}
    results: dict[str, dict[str, object]] = {rule: {} for rule in rules}
    verdicts: dict[str, list[list[bool]]] = {rule: [] for rule in rules}
    try:
        spec = load_spec(bundled_example())
        english = [e for e in read_datasets(spec.train_paths()) if e.lang in (None, "en")]
        test_sets = {
            "bundled_test": [e for e in read_datasets(spec.test_paths()) if e.lang in (None, "en")],
            "reference": read_dataset(args.reference, label_column="r1_review_extracted"),
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
    except TopicGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
