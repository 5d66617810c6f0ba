"""One writer per run directory: an advisory lock every command that writes a run holds.

``pretrain`` / ``supervised`` / ``joint``, ``eval``, ``export``, ``index``, ``report`` and
``faces`` hold ``RUN_DIR/.lock`` (``fcntl.flock``, exclusive, never waited for) from before they
check the directory until they exit. A second writer is refused at once with a
:class:`RunLocked` naming the holder's pid and command line, which the lock file holds as JSON:
two writers would interleave ``metrics.jsonl``, overwrite each other's checkpoints and merge
their seeds into one ``results.json``.

The kernel releases a flock when its process ends, however it ends (SIGKILL, a crash, a lost
node's process), so a lock file left behind never blocks anyone: only a live holder does.
The holder removes the file while it still holds the lock; a process that opened the old file
meanwhile sees that it was replaced (another inode at the path) and takes the new one, so two
processes can never hold two different files at one path. flock is per machine on some network
file systems: two hosts writing one run directory are not detected there.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from selfsup.distributed import any_rank, rank
from selfsup.errors import SelfsupError, WriteError
from selfsup.layout import LOCK

LOCK_NAME = LOCK
"""The lock file in a run directory; not a run file (``--overwrite`` and checks ignore it)."""


class RunLocked(SelfsupError):
    """Another live process writes into the run directory."""


@contextmanager
def run_lock(run_dir: str | Path, *, enabled: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (creating the folder if needed), or raise
    :class:`RunLocked` naming the holder. A folder this call created and nothing filled is
    removed again on exit. ``enabled=False``: nothing is done."""
    if not enabled:
        yield
        return
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    path = run_dir / LOCK_NAME
    fd = _acquire(path)
    try:
        _write_holder(fd)
        yield
    finally:
        _release(fd, path, run_dir if created else None)


@contextmanager
def rank_zero_lock(run_dir: str | Path) -> Iterator[None]:
    """:func:`run_lock` for a run every torchrun process trains but rank 0 alone writes: rank
    0 holds it, and when rank 0 is refused every rank stops together (not at a collective)."""
    with ExitStack() as stack:
        refused: SelfsupError | None = None
        if rank() == 0:
            try:
                stack.enter_context(run_lock(run_dir))
            except SelfsupError as err:
                refused = err
        if any_rank(refused is not None):
            raise refused or RunLocked(f"rank 0 could not lock {run_dir}; see its message")
        yield


def writes_into(run_dir: str | Path, path: str | Path) -> bool:
    """Whether ``path`` lies inside ``run_dir`` (a command writing there must hold its lock)."""
    return Path(path).resolve().is_relative_to(Path(run_dir).resolve())


def _acquire(path: Path) -> int:
    """An open descriptor of ``path`` with the exclusive flock held."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise WriteError(
                f"cannot create the lock file {path} ({err.strerror or err}): this command "
                "writes into the run directory; fix its permissions or use another one"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(_refusal(path)) from None
        if _is_file_at(fd, path):
            return fd
        os.close(fd)  # removed or replaced since we opened it: lock the one there now


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def _write_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join(sys.orig_argv),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):  # being written this very moment, or unreadable
        return {}
    return holder if isinstance(holder, dict) else {}


def _refusal(path: Path) -> str:
    holder = _read_holder(path)
    pid = holder.get("pid", "unknown")
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return (
        f"{path.parent} is being written by another process (pid {pid}{where}, since "
        f"{holder.get('since', '?')}: {holder.get('command', 'command unknown')}); two writers "
        "would mix their metrics, checkpoints and results. Wait for it to finish, stop it "
        f"(kill {pid}; a training run continues with --resume), or use another directory"
    )


def _release(fd: int, path: Path, created: Path | None) -> None:
    """Remove the lock file while still holding it (see the module docstring), then unlock;
    a folder :func:`run_lock` created is removed when nothing else was put in it."""
    with suppress(OSError):  # (a folder made read-only: the flock goes with the descriptor)
        path.unlink(missing_ok=True)
    os.close(fd)
    if created is not None:
        with suppress(OSError):  # it holds the run's files
            created.rmdir()
