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
import torch.distributed as dist

from selfsup.train.checkpoint import load_checkpoint
from tiny import TINY

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "selfsup", "pretrain", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_torchrun_trains_one_run_from_two_processes_and_resumes(tmp_path) -> None:
    out = tmp_path / "run"
    common = [*TINY, "train.device=cpu", "eval.protocols=[knn]", "eval.knn.k=[5]",
              "eval.compare_random=false", "eval.compare_pixels=false"]  # fmt: skip
    done = torchrun("--out", str(out), *common)
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
