"""The shipped recipe's guards, evaluated: each guard on the bundled test file and, when it
is present, the reference project's reviewed data, as ``topicguard evaluate --json`` prints
them, into one JSON object (``results/shipped.json``, rendered by ``benchmarks/render.py``).

    python benchmarks/shipped.py GUARD... [--reference FILE] > results/shipped.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REFERENCE = Path(
    os.environ.get("TOPICGUARD_REFERENCE_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "reference"
)
TEST = "src/topicguard/examples/logistics/test.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("guards", nargs="+", type=Path)
    parser.add_argument("--reference", type=Path, default=REFERENCE / "rev_guardrail_r1.xlsx")
    args = parser.parse_args(argv)

    from topicguard import TopicGuard, TopicGuardError
    from topicguard.data import read_dataset
    from topicguard.evaluate import evaluate

    datasets = [("bundled test file", Path(TEST), None, "")]
    if args.reference.is_file():
        column = "r1_review_extracted"
        datasets.append(("reference data", args.reference, column, f" --label-column {column}"))
    rows = []
    try:
        for guard_dir in args.guards:
            guard = TopicGuard.load(guard_dir)
            for name, path, label_column, flags in datasets:
                metrics = evaluate(guard, read_dataset(path, label_column=label_column)).to_dict()
                rows.append(
                    {
                        "guard": str(guard_dir),
                        "data": name,
                        "command": f"topicguard evaluate {guard_dir} "
                        f"{os.path.relpath(path)}{flags} --json",
                        "backend": guard.backend_name,
                        "metrics": metrics,
                    }
                )
    except TopicGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "evaluations": rows}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
