"""The one way selfsup writes a file: atomically, with the user's permissions.

Everything is written into a temporary file beside its destination, flushed to disk and only
then renamed over it (``os.replace`` is atomic on POSIX and Windows), so a crash, a kill or a
full disk mid-write leaves the previous file whole and never a truncated one that a later run
would trust. The temporary file is created private (0600) by ``mkstemp``; before the rename it
gets the permissions a plain ``open()`` would give under the user's umask (usually 0644), so
colleagues on a shared machine can read a run. A failed write removes the temporary file and
raises :class:`selfsup.errors.WriteError` naming the file and saying the old one is intact.

A process killed mid-write (SIGKILL, or SIGTERM before a handler is installed, e.g. while a
dataset decodes) cannot remove its temporary. So the writer holds an advisory lock
(``fcntl.flock``) on its temporary for as long as it writes it, and every write first removes
the temporaries of the same file that nobody holds (:func:`remove_leftovers`): the kernel
releases a dead process's flock, so those are leftovers, while a live writer's is left alone.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from selfsup.errors import WriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary(path: Path, *, folder: bool = False) -> tuple[Path, int | None]:
    """A new hidden temporary file (or folder) beside ``path``, with for a file an open
    descriptor holding its flock (close it once the file is renamed or removed), or a
    WriteError saying why not (a read-only folder, a full disk)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        kw = {"prefix": f".{path.name}.", "suffix": ".tmp", "dir": path.parent}
        if folder:
            return Path(tempfile.mkdtemp(**kw)), None
        while True:
            fd, name = tempfile.mkstemp(**kw)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_at(fd, Path(name)):
                return Path(name), fd
            os.close(fd)  # removed as a leftover between its creation and its flock: again
    except OSError as err:
        raise WriteError(
            f"could not write {path}: cannot create a file in {path.parent} "
            f"({err.strerror or err}); nothing was changed there. Make the folder writable or "
            "choose another one"
        ) from err


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; when the block completes it is synced, given the
    umask's permissions and renamed onto ``path``. On any error it is removed."""
    path = Path(path)
    remove_leftovers(path.parent, glob.escape(path.name))
    tmp, held = _temporary(path)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(
            f"could not write {path} ({err.strerror or err}); the previous {path.name}, if "
            "any, is intact. Free disk space or fix permissions, then run again (a training "
            "run continues with --resume)"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
        if held is not None:
            os.close(held)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(binary_file)`` into ``path`` atomically (e.g. ``lambda f: torch.save(obj, f)``)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        write(f)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def _is_at(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the file at ``path`` (not removed or replaced)."""
    try:
        here = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def remove_leftovers(folder: str | Path, pattern: str = "*") -> None:
    """Remove the temporary files of ``folder/pattern`` (a glob) that no live writer holds:
    leftovers of writes a kill interrupted. Best effort: one that cannot be opened or
    removed is left for the next write."""
    for tmp in Path(folder).glob(f".{pattern}.*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # gone already, a folder's, unreadable, or a link
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer
            if _is_at(fd, tmp) and stat.S_ISREG(os.fstat(fd).st_mode):
                tmp.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)


def remove_temporaries(folder: str | Path, name: str = "*") -> None:
    """Remove the temporaries that writes of ``folder/name`` left when a kill interrupted them
    (never renamed over their file, so never read)."""
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block completes it is renamed onto
    ``path`` (a folder already there is replaced only with ``overwrite``). On any error, and
    after a kill, only a hidden ``.NAME.*.tmp`` folder is left, never a partial ``path``;
    temporaries a kill left are removed the next time. A replaced folder is lost at no
    point: see :func:`_swap_in` and :func:`recover_folder`."""
    path = Path(path)
    recover_folder(path)
    _remove_temporaries(path)
    tmp, _ = _temporary(path, folder=True)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        _swap_in(tmp, path, overwrite)
    except OSError as err:
        raise WriteError(
            f"could not write the folder {path} ({err.strerror or err}); nothing was left at "
            f"{path} by this write (a folder already there is as it was). Free disk space or "
            "fix permissions, then run again"
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_temporaries(path)


def _remove_temporaries(path: Path) -> None:
    for old in path.parent.glob(f".{path.name}.*.tmp"):
        shutil.rmtree(old, ignore_errors=True)


def _replaced(path: Path) -> Path:
    """Where :func:`_swap_in` keeps the folder it replaces until the new one is in place."""
    return path.with_name(f".{path.name}.replaced")


def _swap_in(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename ``tmp`` onto ``path``. A folder cannot replace a folder in one rename, so one
    already there (with ``overwrite``) is first renamed to :func:`_replaced`, put back when
    the second rename fails, and deleted only once the new one is in place; a kill between
    the two renames leaves it there for :func:`recover_folder` to put back."""
    if not (overwrite and path.exists()):
        os.replace(tmp, path)
        return
    old = _replaced(path)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(path: str | Path) -> None:
    """Finish what a kill inside :func:`_swap_in` left: the replaced folder goes back to
    ``path`` when nothing took its place, and is deleted when the new one did. Best effort
    (a reader without write access leaves it for the next writer)."""
    path = Path(path)
    old = _replaced(path)
    if not old.exists():
        return
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        with suppress(OSError):
            os.replace(old, path)
