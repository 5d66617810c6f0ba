"""``torchrun --nproc_per_node 2 -m selfsup pretrain``: two CPU processes (gloo) train one run.

Rank 0 alone writes the run's files (one metrics line per step, one checkpoint) and evaluates;
each rank trains its half of every global batch; the run resumes across ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from selfsup.checkpoint import load_checkpoint
from tiny import TINY

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


def env() -> dict[str, str]:
    """This checkout's selfsup, one thread a process."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


LAUNCH = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun_command(*args: str, command: str = "pretrain") -> list[str]:
    """``torchrun --standalone --nproc_per_node 2 -m selfsup COMMAND ARGS``."""
    return [sys.executable, *LAUNCH, "-m", "selfsup", command, *args]


def torchrun(*args: str, command: str = "pretrain") -> subprocess.CompletedProcess:
    cmd = torchrun_command(*args, command=command)
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)


def one_process(*args: str, command: str = "pretrain") -> subprocess.CompletedProcess:
    """``python -m selfsup COMMAND ARGS``: the same run in a single process."""
    cmd = [sys.executable, "-m", "selfsup", command, *args]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)


def losses(run: Path) -> list[dict]:
    """The per-step records of ``run``'s metrics.jsonl."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "loss" in r]


def in_batch_order(queue: torch.Tensor) -> torch.Tensor:
    """A 2-process MoCo queue of 64 keys in one process's order: it holds the same keys,
    gathered in rank order (the 16 even then the 16 odd samples of each global batch of 32),
    where one process writes them in batch order."""
    j = torch.arange(64)
    block, within = j // 32, j % 32
    return queue[block * 32 + (within % 2) * 16 + within // 2]


def test_torchrun_trains_one_run_from_two_processes_and_resumes(tmp_path) -> None:
    out = tmp_path / "run"
    common = [
        *TINY,
        "train.device=cpu",
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
    ]
    done = torchrun("--config", "defaults", "--out", str(out), *common)
    assert done.returncode == 0, done.stderr[-3000:]
    steps_per_epoch = 128 // 32  # data.limit / the global train.batch_size
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "loss" in r]
    assert steps == list(range(2 * steps_per_epoch))  # rank 0 alone writes, once per step
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2 * steps_per_epoch
    results = json.loads((out / "results.json").read_text())
    assert [r["protocol"] for r in results["evals"]] == ["knn"]
    assert done.stdout.count("run directory:") == 1  # one report, from rank 0

    again = torchrun("--out", str(out), "--resume", "train.epochs=3")
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "loss" in r]
    assert steps == list(range(3 * steps_per_epoch))  # continued, not restarted
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3 * steps_per_epoch


def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path) -> None:
    """MoCo on a ViT (no batch norm: on CPUs each rank normalises its own half, SyncBatchNorm
    is CUDA-only): the final weights of 2 processes x 16 images equal those of 1 process x 32.
    This holds only if the views, the gathered keys, the queue and the gradient averaging are
    all those of one process; and the two runs write the same files."""
    common = [
        *TINY,
        "method.name=moco",
        "method.queue_size=64",
        "method.projector=32-16",
        "backbone.name=vit_tiny_p4",
        "train.device=cpu",
        "train.precision=fp32",
        "train.channels_last=false",
        "train.epochs=1",
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
    ]
    two, one = tmp_path / "two", tmp_path / "one"
    done = torchrun("--config", "defaults", "--out", str(two), *common)
    assert done.returncode == 0, done.stderr[-3000:]
    single = one_process("--config", "defaults", "--out", str(one), *common)
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(one / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    a["queue.queue"] = in_batch_order(a["queue.queue"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert moved  # not bit-identical (the sums run in another order), but equal within rounding
    files = {p.relative_to(two) for p in two.rglob("*")}
    assert files == {p.relative_to(one) for p in one.rglob("*")}


def _worker_pids(parent: int) -> dict[int, int]:
    """{RANK: pid} of torchrun's worker processes under ``parent``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
            continue
        ranks = [v.split(b"=", 1)[1] for v in env if v.startswith(b"RANK=")]
        if ranks:
            found[int(ranks[0])] = int(entry.name)
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_checkpointed_step(tmp_path) -> None:
    """Issue #26.1: SIGTERM to rank 1 alone printed "stopped at step 74, checkpoint written"
    while last.pt held step 64, and torchrun then killed rank 0. Now the ranks decide
    together (at the next metrics flush): both stop at one step and the checkpoint holds it."""
    import signal

    out = tmp_path / "run"
    common = [*TINY, "train.device=cpu", "train.epochs=200", "eval.protocols=[knn]"]
    common += ["eval.knn.k=[5]", "eval.compare_random=false", "eval.compare_pixels=false"]
    cmd = torchrun_command("--config", "defaults", "--out", str(out), *common)
    proc = subprocess.Popen(
        cmd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _signal_rank_one(proc, out)
    finally:  # a hang (the old behaviour) must not leave the workers running
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _signal_rank_one(proc: subprocess.Popen, out: Path) -> None:
    import signal
    import time

    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if sum('"loss"' in x for x in lines) >= 10:
            break
        time.sleep(0.2)
    workers = _worker_pids(proc.pid)
    assert set(workers) == {0, 1}, workers
    os.kill(workers[1], signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    said = [line for line in stderr.splitlines() if "stopped by" in line]
    assert len(said) == 2, stderr[-3000:]  # both ranks, not rank 1 alone
    steps = {int(line.split(" at step ")[1].split()[0]) for line in said}
    assert len(steps) == 1, said
    (step,) = steps
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == step
    assert any("SIGTERM" in line for line in said)
    assert any("a signal to another rank" in line for line in said)


def test_joint_training_on_two_processes_is_one_process_on_the_global_batch(tmp_path) -> None:
    """Issue #26.5: joint training's cross-entropy was each rank's mean over its own labelled
    images, and metrics.jsonl logged rank 0's local loss. Now the cross-entropy is the mean
    over the global batch's labelled images (their count summed over ranks) and the logged
    loss and parts are the mean over ranks: 2 processes x 16 images end with the weights and
    log the losses of 1 process x 32 (MoCo on a ViT, whose InfoNCE is a per-rank mean too)."""
    common = [
        *TINY,
        "method.name=moco",
        "method.queue_size=64",
        "method.projector=32-16",
        "backbone.name=vit_tiny_p4",
        "joint.label_fraction=0.3",  # labelled images fall unevenly on the two ranks
        "train.optimizer=sgd",
        "train.lr=0.5",
        "train.device=cpu",
        "train.precision=fp32",
        "train.channels_last=false",
        "train.epochs=1",
        "train.log_every=2",
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
    ]
    two, one = tmp_path / "two", tmp_path / "one"
    done = torchrun("--config", "defaults", "--out", str(two), *common, command="joint")
    assert done.returncode == 0, done.stderr[-3000:]
    single = one_process("--config", "defaults", "--out", str(one), *common, command="joint")
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(one / "checkpoints" / "last.pt")["model"]
    a["ssl.queue.queue"] = in_batch_order(a["ssl.queue.queue"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    logged, alone = losses(two), losses(one)
    assert [r["step"] for r in logged] == [r["step"] for r in alone] == list(range(4))
    for r, s in zip(logged, alone, strict=True):
        for key in ("loss", "ssl_loss", "cross_entropy"):
            assert r[key] == pytest.approx(s[key], rel=1e-4, abs=1e-6), (r["step"], key)


def worker(out: Path, mode: str) -> None:
    """``tests/torchrun_worker.py OUT MODE`` on 2 CPU processes (see its docstring)."""
    script = Path(__file__).with_name("torchrun_worker.py")
    cmd = [sys.executable, *LAUNCH, str(script), str(out), mode]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_ranks_draw_their_own_dropout_and_a_two_rank_mid_epoch_resume_is_exact(tmp_path) -> None:
    """Issue #26.5: every rank drew the same dropout masks (one seed everywhere). Now each
    step seeds the global RNG from (seed, step, rank): the masks differ across ranks, and a
    2-rank run cut after a mid-epoch checkpoint and resumed ends with the uninterrupted run's
    weights and losses. The uninterrupted run also has a training-time monitor mark, which
    rank 0 alone holds: its flush is decided by both ranks (rank 0 flushing alone waited
    for a collective the other rank never joined)."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    worker(full, "full")
    first, second = (torch.load(full / f"masks-rank{r}.pt") for r in (0, 1))
    both = ~(first[0].isnan() | second[0].isnan())
    agree = (first[0][both] == second[0][both]).float().mean().item()
    assert agree < 0.8, agree  # independent masks agree on about half the features
    assert any("probe" in r for r in map(json.loads, (full / "metrics.jsonl").open()))
    worker(cut, "cut")
    ckpt = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["step"]) == (1, 2, 6)
    assert ckpt["view_generator_device"] == "cpu"  # each generator state with its device type
    worker(cut, "resume")
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in losses(full)] == [r["loss"] for r in losses(cut)]
