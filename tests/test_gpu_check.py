"""``bash benchmarks/gpu_check.sh --dry-run``: the real script, end to end, on the CPU.

The dry run is the only way its plumbing is exercised before a GPU is lent: every check must
run its tiny CPU version (or collect the CUDA-only tests) and pass, and every CUDA-only part
must say it was skipped for want of CUDA, so a check that silently ran nothing fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ["cuda_tests", "ddp_syncbn", "memory_speed", "bf16_vs_fp32", "compile"]
DRY = "no CUDA (dry run)"


def test_dry_run_passes_every_cpu_part_and_skips_every_cuda_part(tmp_path: Path) -> None:
    cmd = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["torch"] == torch.__version__
    assert [c["name"] for c in report["checks"]] == CHECKS
    for check in report["checks"]:
        statuses = [p["status"] for p in check["parts"]]
        assert check["status"] in {"PASS", "SKIP"} and set(statuses) <= {"PASS", "SKIP"}, check
        cuda_only = [p for p in check["parts"] if p["status"] == "SKIP"]
        assert cuda_only and all(p["message"].startswith(DRY) for p in cuda_only), check
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["cuda_tests"]["status"] == "SKIP"
    assert checks["cuda_tests"]["parts"][0]["data"]["ids"], "no CUDA-only test found"
    assert [p["status"] for p in checks["memory_speed"]["parts"]] == ["PASS"] * 4 + ["SKIP"]
    ddp = checks["ddp_syncbn"]["parts"][0]["data"]
    assert ddp["vs_single"] <= 1e-5 and ddp["moved"] > 1e-3
    assert f"torch {torch.__version__}" in proc.stdout and "| SKIP |" in proc.stdout
