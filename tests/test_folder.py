"""The model folder's one owner: metadata round trip, validation, format upgrade and refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from topicguard import ModelError, TopicGuard
from topicguard.folder import (
    FORMAT_VERSION,
    METADATA_FILE,
    GuardMetadata,
    Routing,
    multilingual_path,
    onnx_file,
    read_bench,
    write_bench,
)


def _copy(guard: Path, tmp_path: Path) -> Path:
    out = tmp_path / "guard"
    shutil.copytree(guard, out)
    return out


def _edit(folder: Path, **changes: object) -> None:
    path = folder / METADATA_FILE
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def test_metadata_round_trips_without_losing_a_key(tiny_guard: Path, tmp_path: Path) -> None:
    raw = json.loads((tiny_guard / METADATA_FILE).read_text())
    metadata = GuardMetadata.read(tiny_guard)
    assert metadata.threshold == raw["threshold"]
    assert metadata.temperature == raw["calibration"]["temperature"]
    assert metadata.max_length == raw["max_length"] == 32
    assert metadata.languages == tuple(raw["languages"])
    assert metadata.spec is not None and metadata.spec["name"] == raw["spec"]["name"]
    assert metadata.to_dict() == raw  # typed fields and the training record, all kept
    metadata.write(tmp_path)
    assert json.loads((tmp_path / METADATA_FILE).read_text()) == raw
    assert GuardMetadata.read(tmp_path) == metadata


def test_a_new_operating_point_changes_only_that(tiny_guard: Path) -> None:
    metadata = GuardMetadata.read(tiny_guard)
    moved = metadata.with_calibration(metadata.calibration | {"threshold": 0.7}, objective="max_f1")
    assert (moved.threshold, moved.threshold_objective) == (0.7, "max_f1")
    assert moved.details == metadata.details and moved.labels == metadata.labels


def test_routing_is_typed_and_checked() -> None:
    raw = {
        "threshold": 0.5,
        "routing": {
            "fast_languages": ["en"],
            "multilingual": "multilingual",
            "second_opinion": [0.1, 0.9],
        },
    }
    metadata = GuardMetadata.from_dict(raw)
    assert metadata.routing == Routing(("en",), "multilingual", (0.1, 0.9))
    assert metadata.to_dict()["routing"] == raw["routing"]
    raw["routing"]["second_opinion"] = [0.9, 0.1]
    with pytest.raises(ModelError, match=r"second_opinion must be two scores"):
        GuardMetadata.from_dict(raw)


def test_a_folder_written_before_format_versions_still_loads(
    tiny_guard: Path, tmp_path: Path
) -> None:
    """Format 0 had no format_version, and could lack labels, max_length and calibration:
    their values were the defaults the upgrade fills in."""
    old = _copy(tiny_guard, tmp_path)
    before = TopicGuard.load(tiny_guard, backend="torch").classify(["where is my parcel"])[0]
    raw = json.loads((old / METADATA_FILE).read_text())
    temperature = raw["calibration"]["temperature"]
    _edit(old, format_version=None, labels=None)
    metadata = GuardMetadata.read(old)
    assert metadata.format_version == FORMAT_VERSION
    assert metadata.labels == {"allowed": "True", "blocked": "False"}
    after = TopicGuard.load(old, backend="torch").classify(["where is my parcel"])[0]
    assert after.score == pytest.approx(before.score)
    _edit(old, calibration=None, max_length=None)
    bare = GuardMetadata.read(old)
    assert (bare.temperature, bare.max_length) == (1.0, 128)
    assert temperature != 1.0  # the guard's own calibration was dropped, not kept by chance


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is unreadable"),
        ("[1, 2]", "is not a JSON object"),
        ('{"labels": {"allowed": "True", "blocked": "False"}}', "has no threshold"),
        ('{"threshold": 2}', "invalid threshold or labels"),
        ('{"threshold": 0.5, "labels": {"yes": "1"}}', "invalid threshold or labels"),
        ('{"threshold": 0.5, "calibration": {"temperature": -1}}', "recalibrate with"),
        ('{"threshold": 0.5, "max_length": "long"}', "invalid max_length"),
        ('{"threshold": 0.5, "format_version": "one"}', "invalid format_version"),
        ('{"threshold": 0.5, "routing": ["en"]}', "routing must be an object"),
    ],
)
def test_a_broken_metadata_file_is_one_clear_error(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / METADATA_FILE).write_text(content)
    with pytest.raises(ModelError, match=message):
        GuardMetadata.read(tmp_path)


def test_a_folder_from_a_newer_topicguard_is_refused_with_the_fix(
    tiny_guard: Path, tmp_path: Path
) -> None:
    future = _copy(tiny_guard, tmp_path)
    _edit(future, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ModelError, match=r"newer topicguard .*pip install -U topicguard"):
        GuardMetadata.read(future)
    code = "import sys; from topicguard.cli import main; sys.argv[0] = 'topicguard'; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "classify", str(future), "hi"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "newer topicguard" in result.stderr


def test_missing_and_non_folders_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model folder not found"):
        GuardMetadata.read(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is not a folder"):
        GuardMetadata.read(tmp_path / "file")
    with pytest.raises(ModelError, match="train one with"):
        GuardMetadata.read(tmp_path)


def test_file_names_and_bench_results_live_in_the_folder_module(tmp_path: Path) -> None:
    assert onnx_file(tmp_path, "onnx") == tmp_path / "onnx" / "model.onnx"
    assert onnx_file(tmp_path, "onnx-int8") == tmp_path / "onnx" / "model.int8.onnx"
    assert multilingual_path(tmp_path) is None
    (tmp_path / "multilingual").mkdir()
    (tmp_path / "multilingual" / METADATA_FILE).write_text("{}")
    assert multilingual_path(tmp_path) == tmp_path / "multilingual"
    assert read_bench(tmp_path) is None
    write_bench(tmp_path, {"backends": {"onnx": {"p50_ms": 1.0}}})
    assert read_bench(tmp_path) == {"backends": {"onnx": {"p50_ms": 1.0}}}
    (tmp_path / "bench.json").write_text("{broken")
    assert read_bench(tmp_path) is None  # ignored with a warning, never an error
