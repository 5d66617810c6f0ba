"""The one way selfsup writes a file: atomically, with the user's permissions.

Everything is written into a temporary file beside its destination, flushed to disk and only
then renamed over it (``os.replace`` is atomic on POSIX and Windows), so a crash, a kill or a
full disk mid-write leaves the previous file whole and never a truncated one that a later run
would trust. The temporary file is created private (0600) by ``mkstemp``; before the rename it
gets the permissions a plain ``open()`` would give under the user's umask (usually 0644), so
colleagues on a shared machine can read a run. A failed write removes the temporary file and
raises :class:`selfsup.errors.WriteError` naming the file and saying the old one is intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from selfsup.errors import WriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; when the block completes it is synced, given the
    umask's permissions and renamed onto ``path``. On any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
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


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(binary_file)`` into ``path`` atomically (e.g. ``lambda f: torch.save(obj, f)``)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        write(f)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


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
    temporaries a kill left are removed the next time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f".{path.name}.*.tmp"):
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists() and overwrite:  # moved aside first: a folder cannot replace a folder
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.replace(path, aside / path.name)
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(
            f"could not write the folder {path} ({err.strerror or err}); nothing was left at "
            f"{path} by this write. Free disk space or fix permissions, then run again"
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for old in path.parent.glob(f".{path.name}.*.tmp"):
            shutil.rmtree(old, ignore_errors=True)
