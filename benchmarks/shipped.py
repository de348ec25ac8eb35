"""The shipped recipe's guards, evaluated: each guard on the bundled test file and, when it
is present, the reference project's reviewed data, as ``topicguard evaluate --json`` prints
them, into one JSON object (``results/shipped.json``, rendered by ``benchmarks/render.py``).

    python benchmarks/shipped.py GUARD... [--reference FILE] > results/shipped.json

Without reference data (``--reference`` or ``$TOPICGUARD_REFERENCE_DATA``), only the bundled
test file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import _common

TEST = _common.ROOT / "src/topicguard/examples/logistics/test.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("guards", nargs="+", type=Path)
    parser.add_argument("--reference", type=Path, help=_common.REFERENCE_HELP)
    args = parser.parse_args(argv)

    from topicguard import TopicGuard, TopicGuardError
    from topicguard.data import read_dataset
    from topicguard.evaluate import evaluate

    datasets = [("bundled test file", TEST, None, "")]
    try:
        reference = _common.reference_file(args.reference)
    except _common.MissingReference as exc:
        print(f"the bundled test file only: {exc}", file=sys.stderr)
    else:
        column = _common.REFERENCE_LABEL
        datasets.append(("reference data", reference, column, f" --label-column {column}"))
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
                        f"{_common.shown(path)}{flags} --json",
                        "backend": guard.backend_name,
                        "metrics": metrics,
                    }
                )
    except TopicGuardError as exc:
        return _common.failed(exc)
    result = {"date": _common.today(), "cpus": os.cpu_count(), "evaluations": rows}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
