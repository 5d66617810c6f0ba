"""One writer per run directory (issue #22): the advisory lock, the CLI commands that hold it,
and the study runner's cells, which never outlive the runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfsup.cli import main
from selfsup.run.lock import LOCK_NAME, RunLocked, run_lock
from tiny import TINY

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["eval.protocols=[knn]", "eval.knn.k=[20]", "eval.compare_random=false"]
QUICK += ["eval.compare_pixels=false"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def _selfsup(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "selfsup", *args]
    pipe = subprocess.PIPE
    return subprocess.Popen(cmd, env=_env(), stdout=pipe, stderr=pipe, text=True)


def test_two_pretrains_on_one_out_one_is_refused_with_the_others_pid(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["pretrain", "--config", "defaults", "--out", str(out), *TINY, *QUICK, "train.epochs=6"]
    first = _selfsup(*args, "seed=0")
    time.sleep(0.3)  # as in the issue: both pass the run-directory check before either writes
    second = _selfsup(*args, "seed=7")
    done = [(p, *p.communicate(timeout=300)) for p in (first, second)]
    codes = sorted(p.returncode for p, _, _ in done)
    assert codes == [0, 2], [err for _, _, err in done]
    (winner, _, _), (_, _, refusal) = sorted(done, key=lambda d: d[0].returncode)
    assert f"pid {winner.pid}" in refusal and "pretrain" in refusal, refusal
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(6 * 128 // 32))  # every step once, from one writer
    seeds = {r["seed"] for r in json.loads((out / "results.json").read_text())["evals"]}
    assert len(seeds) == 1


HOLD = (
    "import sys, time\nfrom selfsup.run.lock import run_lock\nwith run_lock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n    time.sleep(120)\n"
)


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock (until killed)."""
    cmd = [sys.executable, "-c", HOLD, str(run_dir)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_second_lock_is_refused_with_the_holders_pid_and_a_dead_holder_blocks_nothing(
    tmp_path,
) -> None:
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        refused = rf"(?s)pid {holder.pid}\b.*time\.sleep.*kill {holder.pid}"
        with pytest.raises(RunLocked, match=refused), run_lock(run):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK_NAME).is_file()  # left by the killed holder: the kernel freed its flock
    with run_lock(run):
        holder_info = json.loads((run / LOCK_NAME).read_text())
        assert holder_info["pid"] == os.getpid()
    assert not run.exists() or not (run / LOCK_NAME).exists()  # removed by its holder


def test_a_lock_taken_on_a_new_folder_leaves_no_folder_when_nothing_was_written(tmp_path) -> None:
    with run_lock(tmp_path / "new"):
        assert (tmp_path / "new" / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()
    with run_lock(tmp_path / "kept"):
        (tmp_path / "kept" / "config.yaml").write_text("{}")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["config.yaml"]


@pytest.fixture(scope="module")
def held_run(tmp_path_factory) -> Iterator[tuple[Path, int]]:
    """A run directory (a config.yaml) whose lock another process holds: (folder, its pid)."""
    run = tmp_path_factory.mktemp("held") / "run"
    holder = _holder(run)
    (run / "config.yaml").write_text("{}\n")
    yield run, holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()


@pytest.mark.parametrize(
    "command",
    [
        ["pretrain", "--config", "defaults", "--out", "RUN", *TINY],
        ["pretrain", "--out", "RUN", "--resume"],
        ["supervised", "--config", "defaults", "--out", "RUN"],
        ["joint", "--config", "defaults", "--out", "RUN", *TINY],
        ["eval", "RUN"],
        ["export", "RUN"],
        ["index", "RUN"],
        ["report", "RUN"],
    ],
    ids=lambda c: c[0] + ("-resume" if "--resume" in c else ""),
)
def test_every_writer_of_a_run_directory_is_refused_while_another_holds_it(
    held_run, capsys, command
) -> None:
    run, pid = held_run
    assert main([str(run) if a == "RUN" else a for a in command]) == 2
    err = capsys.readouterr().err
    assert f"pid {pid}" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "config.yaml"]  # nothing written


# --- the study runner: a cell never outlives the runner, a rerun never clears a live run -----

RUNNER = (
    "import sys\nfrom pathlib import Path\nfrom selfsup.studies import runner\n"
    "sys.exit(runner.run_logged(sys.argv[2:], Path(sys.argv[1])))\n"
)
CELL = "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead (its parent, the killed runner, never reaped it)


SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_cell_process_ends_with_the_study_runner(tmp_path, sig) -> None:
    pid_file = tmp_path / "cell.pid"
    cell = [sys.executable, "-c", CELL, str(pid_file)]
    cmd = [sys.executable, "-c", RUNNER, str(tmp_path / "cell.log"), *cell]
    # the runner starts with Python's own SIGINT handler even where this test's shell ignores
    # SIGINT (a background job of a non-interactive shell: Python then keeps SIG_IGN and the
    # SIGINT case would test the shell, not the runner)
    runner = subprocess.Popen(cmd, env=_env(), preexec_fn=_default_sigint)
    end = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert runner.poll() is None and time.monotonic() < end
        time.sleep(0.02)
    cell_pid = int(pid_file.read_text())
    runner.send_signal(sig)
    assert runner.wait(timeout=60) != 0
    end = time.monotonic() + 20
    while _alive(cell_pid) and time.monotonic() < end:
        time.sleep(0.05)
    alive = _alive(cell_pid)
    if alive:
        os.kill(cell_pid, signal.SIGKILL)
    assert not alive, f"the cell outlived a runner stopped by {sig.name}"


def test_a_rerun_never_clears_or_trains_a_run_another_process_writes(tmp_path, monkeypatch) -> None:
    from selfsup.studies import runner
    from selfsup.studies.spec import Cell

    run = tmp_path / "runs" / "vicreg"
    holder = _holder(run)  # an orphaned cell still training, before its first checkpoint
    started: list[list[str]] = []
    monkeypatch.setattr(runner, "_selfsup", lambda args, log: started.append(args))
    try:
        (run / "metrics.jsonl").write_text('{"step": 0}\n')
        with pytest.raises(runner.CellFailed, match=f"pid {holder.pid}"):
            runner.train(Cell("vicreg", None, "pretrain"), run, tmp_path / "log", tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / "metrics.jsonl").read_text() == '{"step": 0}\n' and not started
    runner.train(Cell("vicreg", None, "pretrain"), run, tmp_path / "log", tmp_path)
    assert not (run / "metrics.jsonl").exists() and len(started) == 1  # its writer is gone
