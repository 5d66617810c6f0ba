"""Execute a study's cells in order, each in its own process, resumable cell by cell.

Each cell is one ``python -m selfsup ...`` subprocess (``pretrain`` / ``supervised`` /
``joint`` / ``faces`` for a run, ``eval`` for an evaluation), not an in-process call: a cell
that runs out of memory, crashes or leaks GPU memory cannot take the study or the next cell
with it, each cell's output goes to its own log (``DIR/logs/``), and a kill of the study
(Ctrl-C, a job limit) stops one well-defined unit. The cost is a second or two of imports per
cell, nothing against a training run.

A cell is finished when its file ``DIR/cells/<run>--<eval>.json`` exists: written atomically
once the subprocess has succeeded, with the records it produced. A rerun of the same command
skips finished cells, resumes an interrupted training from its last checkpoint (``pretrain
--resume``) and redoes an interrupted evaluation. ``DIR/study.json`` mirrors every cell's state
(pending, running, finished, failed, blocked, unavailable) with its attempts and times.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import selfsup
from selfsup.atomic import write_json_atomic
from selfsup.backbones.config import is_vit
from selfsup.config import apply_overrides
from selfsup.data.views import eval_center_crop
from selfsup.errors import SelfsupError
from selfsup.evaluate.table import eval_settings, settings_id
from selfsup.layout import RunDir
from selfsup.names import child
from selfsup.run.lock import LOCK_NAME, run_lock
from selfsup.rundir import load_run_config, read_results
from selfsup.studies.spec import OWN, Cell

STATE = "study.json"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def cell_file(out: Path, cell: Cell) -> Path:
    return out / "cells" / f"{cell.run}--{cell.eval or 'train'}.json"


def fingerprint(cell: Cell) -> dict[str, Any]:
    """What a cell does (its overrides as listed); saved in the cell's file."""
    return {k: v for k, v in asdict(cell).items() if k not in ("run", "eval")}


def _effect(fp: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint with its overrides replaced by the settings they make (the later of two
    values of a key wins), so a reordering that changes nothing is not a change."""
    return {**fp, "overrides": apply_overrides({}, list(fp.get("overrides") or []))}


def read_cell(out: Path, cell: Cell) -> dict[str, Any] | None:
    path = cell_file(out, cell)
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    if _effect(done.get("fingerprint") or {}) != _effect(fingerprint(cell)):
        raise SelfsupError(
            f"cell {cell.id} in {out} was made with other settings ({path}: "
            f"{done.get('fingerprint')}, now {fingerprint(cell)}); give another --out, or "
            f"delete {path} and {out / 'runs' / cell.run} to redo it"
        )
    return done


class CellFailed(Exception):
    """A cell's subprocess failed (``state`` "failed") or cannot run here ("unavailable")."""

    def __init__(self, message: str, state: str = "failed") -> None:
        super().__init__(message)
        self.state = state


def _child_env() -> dict[str, str]:
    """The children import this very selfsup (a worktree, an editable install)."""
    env = dict(os.environ)
    src = str(Path(selfsup.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_logged(cmd: list[str], log: Path) -> int:
    """Run ``cmd`` with its output appended to ``log``; its exit status.

    The cell runs in a process group of its own, so that it and whatever it starts can be
    ended together, and it never outlives the runner: a Ctrl-C or SIGTERM of the runner sends
    SIGTERM to the cell's group (a training cell writes a checkpoint and exits) and waits for
    it, SIGKILL after :data:`GRACE_S` seconds or a second interrupt; a runner killed outright
    takes the cell with it (Linux: ``PR_SET_PDEATHSIG``). A rerun could otherwise start a
    second writer beside an orphaned cell (the run directory's lock refuses it anyway)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f, _terminate_as_interrupt():
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        try:
            return proc.wait()
        except BaseException:
            _stop(proc)
            raise


GRACE_S = 120.0
"""Seconds a cell gets to stop after SIGTERM (a checkpoint write) before SIGKILL."""


def _stop(proc: subprocess.Popen) -> None:
    """End the cell's process group: SIGTERM, then SIGKILL after :data:`GRACE_S` seconds or
    at a second interrupt."""
    try:
        _signal_group(proc, signal.SIGTERM)
        proc.wait(timeout=GRACE_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with suppress(ProcessLookupError):  # the group has gone already
        os.killpg(proc.pid, sig)


_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when this process dies (Linux;
    elsewhere None). ``prctl`` is looked up here, not in the forked child."""
    if _PRCTL is None:
        return None
    parent, prctl = os.getpid(), _PRCTL

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl: follow it
            os._exit(1)

    return preexec


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler ending the study) raises KeyboardInterrupt, as Ctrl-C does, so the
    running cell is stopped rather than orphaned; in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _selfsup(args: list[str], log: Path) -> None:
    rc = run_logged([sys.executable, "-m", "selfsup", *args], log)
    if rc != 0:
        lines = [x for x in log.read_text().splitlines() if x.strip()]
        errors = [x for x in lines if "error" in x.lower()]
        raise CellFailed(f"exit status {rc}: {(errors or lines or [''])[-1][:300]} (log: {log})")


BUILT_IN = ("pretrain", "supervised", "joint")  # selfsup.cli's own training commands
_COMMANDS: list[str] = []


def available_commands() -> list[str]:
    """The subcommands this selfsup has (``faces`` comes from another module; asked once)."""
    if not _COMMANDS:
        out = subprocess.run(
            [sys.executable, "-m", "selfsup", "--help"],
            capture_output=True,
            text=True,
            env=_child_env(),
        ).stdout
        start, end = out.find("{"), out.find("}")
        _COMMANDS.extend(out[start + 1 : end].split(",") if start >= 0 else [])
    return _COMMANDS


def train(cell: Cell, run_dir: Path, log: Path, root: Path) -> list[dict]:
    """Train (or resume, or just collect) a run; its records are the ``own`` evaluation."""
    if cell.command not in BUILT_IN and cell.command not in available_commands():
        raise CellFailed(f"this selfsup has no {cell.command!r} command", "unavailable")
    if RunDir(run_dir).results.is_file():
        pass  # finished before the study could record it (killed in between)
    elif RunDir(run_dir).checkpoint.is_file() and cell.command != "faces":
        _selfsup(["pretrain", "--out", str(run_dir), "--resume"], log)
    else:
        _clear(run_dir)  # no checkpoint: nothing to keep
        config = ["--config", str(root / cell.config)] if cell.config else []
        _selfsup([cell.command, *config, "--out", str(run_dir), *cell.args, *cell.overrides], log)
    results = read_results(run_dir) or {}
    return results.get("evals") or face_records(results)


def _clear(run_dir: Path) -> None:
    """Empty ``run_dir`` for a fresh start, holding its lock: never a run another process
    (an orphaned cell of a killed study, a user's command) is writing."""
    if not run_dir.exists():
        return
    try:
        with run_lock(run_dir):
            for path in run_dir.iterdir():
                if path.name == LOCK_NAME:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
    except SelfsupError as err:
        raise CellFailed(str(err)) from None


def face_records(results: dict) -> list[dict]:
    """``selfsup faces``' results.json as table records: kNN identification (k=1, 20, ...) and
    10-fold pairs verification, before (``knn``, ``verification``) and after fine-tuning on
    the identities (``finetuned knn``, ``finetuned verification``)."""
    records = []
    ident, verif = results.get("identification") or {}, results.get("verification") or {}
    for stage, prefix in (("pretrained", ""), ("finetuned", "finetuned ")):
        ks = {
            name.removeprefix("knn").removesuffix("_top1"): top1
            for name, top1 in (ident.get(stage) or {}).items()
        }
        for k in sorted((k for k in ks if k.isdigit()), key=int):
            records.append(
                {"dataset": "lfw", "protocol": f"{prefix}knn", "k": int(k), "top1": ks[k]}
            )
        ver = verif.get(stage) or {}
        unseen = ver.get("unseen_people") or {}
        # LFW's protocol first: the pairs of people fine-tuning never saw; then every pair
        # (after fine-tuning, seen people included); the pair counts as the row's measure
        for scored, name in ((unseen, "unseen people"), (ver, "all pairs")):
            if scored.get("mean") is not None:
                records.append(
                    {
                        "dataset": "lfw",
                        "protocol": f"{prefix}verification, {name}",
                        "top1": scored["mean"],
                        "n_pairs": scored.get("n_pairs"),
                    }
                )
    return records


def evaluate(cell: Cell, run_dir: Path, log: Path) -> list[dict]:
    """``selfsup eval`` the run, then pick its records out of ``results.json``: those it wrote
    (not there before, byte for byte) for this cell's protocols, datasets and seeds at this
    cell's settings (the settings id the harness records), whatever else the file holds."""
    args = ["eval", str(run_dir), "--protocol", ",".join(cell.protocols)]
    if cell.datasets:
        args += ["--dataset", ",".join(cell.datasets)]
    dump = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    before = {dump(r) for r in (read_results(run_dir) or {}).get("evals", [])}
    _selfsup([*args, *cell.overrides], log)
    cfg = load_run_config(run_dir, cell.overrides)
    datasets = cell.datasets or [cfg.data.dataset, *cfg.eval.datasets]
    seeds = cfg.eval.seeds or [cfg.seed]
    # as the harness records them: a ViT run's probe feature, an ImageNet-size view's crop
    kw = dict(vit=is_vit(cfg.backbone.name), center_crop=eval_center_crop(cfg.views.size))
    ids = {p: settings_id(eval_settings(p, cfg.eval, **kw)) for p in cell.protocols}
    return [
        r
        for r in (read_results(run_dir) or {}).get("evals", [])
        if dump(r) not in before  # written by this evaluation (a rerun rewrites fit_seconds)
        and ids.get(r["protocol"]) == r.get("settings_id")
        and r["dataset"] in datasets
        and r.get("seed") in seeds
    ]


class Progress:
    """One line per cell, with the study's ETA from the cells timed so far (by kind)."""

    def __init__(self, cells: list[Cell], echo: Callable[[str], None]) -> None:
        self.cells, self.echo, self.times = cells, echo, {"train": [], "eval": []}

    @staticmethod
    def kind(cell: Cell) -> str:
        return "train" if cell.eval is None else "own" if cell.eval == OWN else "eval"

    def eta(self, left: list[Cell]) -> str:
        every = self.times["train"] + self.times["eval"]
        if not every:
            return "ETA unknown until a cell has run"

        def mean(kind: str) -> float:
            if kind == "own":  # reads the training cell's records: no time
                return 0.0
            times = self.times[kind] or every
            return sum(times) / len(times)

        return f"ETA {duration(sum(mean(self.kind(c)) for c in left))} for {len(left)} left"

    def line(self, i: int, cell: Cell, text: str) -> None:
        self.echo(f"[{i + 1}/{len(self.cells)}] {cell.id}: {text}")


def _initial_state(cells: list[Cell], out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``study.json``'s content before this run of the study: each cell finished (its cell
    file is there) or pending, with the attempts an earlier run recorded."""
    old = json.loads((out / STATE).read_text()) if (out / STATE).is_file() else {}
    old_cells = old.get("cells", {})
    state: dict[str, Any] = {**meta, "cells": {}}
    for cell in cells:
        prev = old_cells.get(cell.id, {})
        done = read_cell(out, cell)
        state["cells"][cell.id] = {
            "state": "finished" if done else "pending",
            "attempts": prev.get("attempts", 0),
            **({k: done[k] for k in ("started", "finished", "wall_s")} if done else {}),
        }
    return state


def _run_cell(cell: Cell, out: Path, run_dir: Path, log: Path, root: Path) -> list[dict]:
    """A cell's records: its run trained, its run's own records, or an evaluation of it."""
    if cell.eval is None:
        return train(cell, run_dir, log, root)
    if cell.eval == OWN:
        return json.loads(cell_file(out, Cell(cell.run, None, "")).read_text())["records"]
    return evaluate(cell, run_dir, log)


def run_cells(
    cells: list[Cell],
    out: Path,
    meta: dict[str, Any],
    root: Path,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Execute every unfinished cell in order; returns the final ``study.json`` content."""
    out.mkdir(parents=True, exist_ok=True)
    state = _initial_state(cells, out, meta)
    save = lambda: write_json_atomic(out / STATE, state)  # noqa: E731
    save()
    progress = Progress(cells, echo)
    for i, cell in enumerate(cells):
        entry = state["cells"][cell.id]
        if entry["state"] == "finished":
            progress.line(i, cell, f"finished earlier ({duration(entry['wall_s'])}), skipped")
            continue
        if cell.eval is not None and state["cells"][f"{cell.run}/train"]["state"] != "finished":
            entry.update(state="blocked", error=f"{cell.run}/train did not finish")
            save()
            progress.line(i, cell, "blocked: its run did not finish")
            continue
        log = child(out / "logs", f"{cell.run}--{cell.eval or 'train'}.log", "runs.name")
        entry.update(state="running", attempts=entry["attempts"] + 1, started=_now(), log=str(log))
        entry.pop("error", None)
        save()
        progress.line(i, cell, f"running ({progress.eta(cells[i:])}; log {log})")
        t0 = time.perf_counter()
        run_dir = child(out / "runs", cell.run, "runs.name")
        try:
            records = _run_cell(cell, out, run_dir, log, root)
        except CellFailed as err:
            entry.update(state=err.state, error=str(err))
            save()
            progress.line(i, cell, f"{err.state}: {err}")
            continue
        wall = time.perf_counter() - t0
        entry.update(state="finished", finished=_now(), wall_s=round(wall, 1))
        write_json_atomic(
            cell_file(out, cell),
            {
                "cell": cell.id,
                "fingerprint": fingerprint(cell),
                "records": records,
                **{k: entry[k] for k in ("started", "finished", "wall_s")},
            },
        )
        save()
        progress.times.setdefault(progress.kind(cell), []).append(wall)
        progress.line(i, cell, f"finished in {duration(wall)}; {progress.eta(cells[i + 1 :])}")
    return state
