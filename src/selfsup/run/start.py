"""Starting a run in a directory: what may already be there, and what a failed start leaves.

A new run may go into a missing or empty directory, or replace a start that never reached its
first checkpoint (killed, or failed before it): there is nothing to resume there. A finished
or unfinished run is kept unless ``--overwrite`` (replace it) or ``--resume`` (continue it);
files that are not a run's are never touched. A new run that fails before its first
checkpoint removes the files it wrote, so the corrected command runs as it is
(:func:`removed_if_failed`; :func:`selfsup.run.lock.run_lock` then removes a folder it created).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selfsup.atomic import remove_temporaries
from selfsup.errors import SelfsupError
from selfsup.layout import LOCK, RunDir

_CHOICES = "or choose another --out"


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool = False) -> bool:
    """Refuse, before any data is read, what must not happen in ``run_dir``; returns whether
    the run files there are to be replaced (``overwrite``, or a start that never
    checkpointed) once the new run's data has loaded."""
    check_run_flags(resume, overwrite)
    if resume:
        _check_resumable(run_dir)
        return False
    files = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    files = [name for name in files if name != LOCK]  # (the lock this command holds)
    if not files:
        return False
    rd = RunDir(run_dir)
    if not (rd.config.is_file() or rd.results.is_file()):
        raise SelfsupError(
            f"{run_dir} already holds files that are not a selfsup run ({_few(files)}); "
            "choose another --out, or an empty or missing folder (--resume and --overwrite "
            "apply to a run directory, one with a config.yaml)"
        )
    if overwrite or _never_checkpointed(run_dir):
        return True
    if rd.results.is_file():
        raise SelfsupError(
            f"{run_dir} holds a finished run (results.json): --overwrite replaces it with this "
            "run (its files are removed once this run's config and data are valid), --resume "
            f"continues it (e.g. more epochs: train.epochs=N), {_CHOICES}"
        )
    last = rd.checkpoint.relative_to(rd.path)
    raise SelfsupError(
        f"{run_dir} holds an unfinished run ({last}): --resume continues it from "
        "that checkpoint with its own config.yaml, --overwrite replaces it with this run, "
        f"{_CHOICES}"
    )


def check_run_flags(resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise SelfsupError(
            "--resume continues the run in --out and --overwrite replaces it; pass one of them"
        )


def _check_resumable(run_dir: Path) -> None:
    if not RunDir(run_dir).config.is_file():
        raise SelfsupError(
            f"cannot resume: {run_dir} holds no run (no config.yaml); start one without --resume"
        )
    if _never_checkpointed(run_dir):
        raise SelfsupError(
            f"cannot resume: {run_dir} never reached its first checkpoint (its start failed or "
            "was killed); start it again without --resume (the command that started it): its "
            "files are replaced"
        )


def _never_checkpointed(run_dir: Path) -> bool:
    """A run's start that wrote its config but neither a checkpoint nor results."""
    rd = RunDir(run_dir)
    return rd.config.is_file() and not rd.checkpoint.exists() and not rd.results.exists()


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def remove_run_files(run_dir: Path) -> None:
    """Delete the files an earlier run wrote into ``run_dir`` (:meth:`RunDir.owned` and atomic
    writes' leftover temporaries); any other file stays."""
    for path in RunDir(run_dir).owned():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    remove_temporaries(run_dir)


@contextmanager
def removed_if_failed(run_dir: Path, *, enabled: bool = True) -> Iterator[None]:
    """Remove the run files of a new run whose start fails (an exception, Ctrl-C) before its
    first checkpoint: nothing can be resumed from them, and left there they would block the
    corrected command. Once a checkpoint exists a failure keeps everything (``--resume``)."""
    try:
        yield
    except BaseException:
        if enabled and not RunDir(run_dir).checkpoint.exists():
            remove_run_files(run_dir)
        raise
