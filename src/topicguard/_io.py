"""Atomic writes: an output file or folder either appears whole or not at all.

Work in progress lives in hidden sibling folders named after their owner (host and process
id): ``.NAME.HOST-PID.RANDOM.tmp``. A process killed outright (SIGKILL, the OOM killer)
cannot remove its own, so the next atomic write or training run in the same folder sweeps
those whose owner on this host is gone. Nothing else is ever swept: not folders of live
processes, not other hosts' (a shared disk), and never the ``.old`` folder that briefly
holds the previous model while it is swapped out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_write_text", "owned_tmp_prefix", "sweep_stale"]

logger = logging.getLogger(__name__)

_OWNED = re.compile(r"\.(?P<host>\w+)-(?P<pid>\d+)\.\w+\.tmp$")


def _host() -> str:
    return re.sub(r"\W", "_", socket.gethostname()) or "host"


def owned_tmp_prefix(name: str) -> str:
    """``mkdtemp`` prefix for a work folder that :func:`sweep_stale` can trace to its owner
    (use with ``suffix=".tmp"``)."""
    return f".{name}.{_host()}-{os.getpid()}."


def sweep_stale(folder: Path) -> list[Path]:
    """Remove work folders in ``folder`` left by dead processes of this host; return them."""
    removed: list[Path] = []
    try:
        children = list(folder.iterdir())
    except OSError:
        return removed
    host = _host()
    for child in children:
        match = _OWNED.search(child.name)
        if not match or match["host"] != host or not child.is_dir() or child.is_symlink():
            continue
        if _alive(int(match["pid"])):
            continue
        shutil.rmtree(child, ignore_errors=True)
        logger.info("removed %s, left behind by a process that was killed", child)
        removed.append(child)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a number no process can have: keep it)
    return True


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename.

    On error the temporary folder is removed and an existing ``path`` is left untouched.
    With ``overwrite`` an existing folder is replaced; without it, the caller must have
    refused earlier (this function checks again and raises ``FileExistsError``).
    """
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=owned_tmp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
