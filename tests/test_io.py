"""Atomic writes, and sweeping the work folders that a killed process leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from topicguard._io import _host, atomic_dir, sweep_stale


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writer_leaves_work_that_the_next_write_sweeps(tmp_path: Path) -> None:
    target = tmp_path / "guard"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from topicguard._io import atomic_dir\n"
        "with atomic_dir(Path(sys.argv[1])) as tmp:\n"
        "    (tmp / 'model.bin').write_bytes(b'half')\n"
        "    os._exit(9)  # no clean-up runs, as under SIGKILL\n"
    )
    subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and not target.exists()
    with atomic_dir(target) as tmp:
        (tmp / "model.bin").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guard"]
    assert (target / "model.bin").read_bytes() == b"whole"


def test_only_dead_processes_folders_of_this_host_are_swept(tmp_path: Path) -> None:
    host, dead = _host(), _dead_pid()
    names = {
        "dead": f".guard.{host}-{dead}.a1_b2.tmp",
        "live": f".guard.{host}-{os.getpid()}.c3d4.tmp",
        "other host": f".guard.elsewhere-{dead}.e5f6.tmp",
        "swap": ".guard.x1y2.old",  # may hold the only copy of the previous model
        "cache": ".topicguard-cache",
        "old style": ".guard.g7h8.tmp",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    (tmp_path / f".notes.{host}-{dead}.z9.tmp").write_text("a file, not a work folder")
    removed = sweep_stale(tmp_path)
    assert [p.name for p in removed] == [names["dead"]]
    assert not (tmp_path / names["dead"]).exists()
    assert all((tmp_path / n).exists() for k, n in names.items() if k != "dead")
    assert sweep_stale(tmp_path / "missing") == []
