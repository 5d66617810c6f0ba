"""Five-minute check for the day a GPU is lent: what the CPU cannot verify, on one GPU.

Checks (``--only NAME[,NAME]``; each stopped after ``--budget-s`` and reported FAIL, the next
one still runs):

- ``cuda_tests``: the project's tests that skip without CUDA (found by their
  ``skipif(not torch.cuda.is_available())`` marks), run by pytest in a subprocess;
- ``ddp_syncbn``: 2 gloo ranks sharing the GPU, DDP + SyncBatchNorm, one SGD step on 2 x B
  images vs one process on the 2B batch: parameters within 1e-5 (``gpu_check_ddp.py``);
- ``memory_speed``: peak memory and images/s of ResNet-50, 2 x 224, batch 256, VICReg and DINO,
  bf16 and fp16 + GradScaler (``gpu_check_train.py``);
- ``bf16_vs_fp32``: the demo recipe for 30 steps from one seed in both: final losses within
  ``--tolerance``;
- ``compile``: ``torch._dynamo.explain`` graph breaks of VICReg and DINO, compiled vs eager.

Without CUDA, or with ``--dry-run``, every check runs a tiny CPU version of itself where it
can and each CUDA-only part says ``SKIP: no CUDA (dry run)``: the script checks its own
plumbing in well under a minute. Writes ``OUT/gpu_check.json``, prints a table; exit code 1
when a check FAILs. Usage: ``bash benchmarks/gpu_check.sh [--dry-run] [--out DIR]``
(docs/gpu_check.md).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from gpu_check_core import DRY, ROOT, Ctx, Part, overall, run_check
from gpu_check_ddp import check_ddp
from gpu_check_train import check_bf16_vs_fp32, check_compile, check_memory_speed


def _mentions_cuda(source: str, nodes: list[ast.expr] | list[ast.stmt]) -> bool:
    return any("cuda.is_available" in (ast.get_source_segment(source, n) or "") for n in nodes)


def cuda_test_ids(tests: Path = ROOT / "tests") -> list[str]:
    """pytest ids of the tests skipped without CUDA: a test function whose decorators, or a
    module whose ``pytestmark``, mention ``cuda.is_available``."""
    ids = []
    for path in sorted(tests.glob("test_*.py")):
        source, rel = path.read_text(), path.relative_to(ROOT).as_posix()
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", "") == "pytestmark" for t in node.targets
            ):
                ids += [rel] if _mentions_cuda(source, [node]) else []
            elif isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                ids += (
                    [f"{rel}::{node.name}"] if _mentions_cuda(source, node.decorator_list) else []
                )
    return ids


def _pytest(args: list[str], ctx: Ctx) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=ctx.budget_s)


def check_cuda_tests(ctx: Ctx, parts: list[Part]) -> None:
    """Run the CUDA-only tests (dry run: only collect them, to know they are found)."""
    ids = cuda_test_ids()
    if not ids:
        parts.append(Part("pytest", "FAIL", "no CUDA-only test found under tests/"))
        return
    names = ", ".join(i.split("::")[-1] for i in ids)
    if ctx.dry:
        proc = _pytest(["--collect-only", *ids], ctx)
        status = "SKIP" if proc.returncode == 0 else "FAIL"
        message = f"{DRY}; collected {len(ids)}: {names}"
        parts.append(Part("pytest", status, message, {"ids": ids, "tail": proc.stdout[-2000:]}))
        return
    report = ctx.out / "cuda_tests.xml"
    proc = _pytest([f"--junitxml={report}", *ids], ctx)
    suite = ET.parse(report).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    ok = proc.returncode == 0 and counts["skipped"] == 0 and counts["tests"] >= len(ids)
    message = f"{counts['tests']} run, {counts['failures'] + counts['errors']} failed, " + (
        f"{counts['skipped']} skipped: {names}"
    )
    data = {"ids": ids, **counts, "tail": (proc.stdout + proc.stderr)[-4000:]}
    parts.append(Part("pytest", "PASS" if ok else "FAIL", message, data))


CHECKS: dict[str, Callable[[Ctx, list[Part]], None]] = {
    "cuda_tests": check_cuda_tests,
    "ddp_syncbn": check_ddp,
    "memory_speed": check_memory_speed,
    "bf16_vs_fp32": check_bf16_vs_fp32,
    "compile": check_compile,
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return f"{model or 'CPU'}, {os.cpu_count()} cores"


def git_sha() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def header(ctx: Ctx) -> dict[str, Any]:
    cuda = torch.version.cuda or "none (a CPU build of torch)"
    return {
        "device": device_name(ctx.device),
        "torch": torch.__version__,
        "cuda": cuda if torch.cuda.is_available() else f"{cuda}, no CUDA device",
        "dry_run": ctx.dry,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "budget_s": ctx.budget_s,
    }


def table(head: dict[str, Any], checks: list[dict[str, Any]]) -> str:
    lines = [f"{head['device']} | torch {head['torch']} | CUDA {head['cuda']} | {head['date']}"]
    if head["dry_run"]:
        lines.append("DRY RUN on the CPU: PASS means the plumbing works, not the GPU's behaviour")
    lines += ["", "| check | status | s | result |", "|---|---|---|---|"]
    for check in checks:
        lines.append(f"| {check['name']} | **{check['status']}** | {check['seconds']:.0f} | |")
        for part in check["parts"]:
            lines.append(f"| | {part['status']} | | {part['name']}: {part['message']} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--only", default=",".join(CHECKS), help="checks, comma-separated")
    parser.add_argument("--budget-s", type=float, default=120.0, help="seconds per check")
    parser.add_argument("--dry-run", action="store_true", help="the CPU versions (no CUDA)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="bf16 vs fp32 final loss")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(CHECKS)
    if unknown:
        parser.error(f"unknown check(s) {sorted(unknown)}; valid: {', '.join(CHECKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dry = args.dry_run or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    args.out = args.out.resolve()  # (pytest runs from the repository's root)
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(device, dry, args.out, args.budget_s, args.tolerance)
    head = header(ctx)
    print(f"{head['device']} | torch {head['torch']} | CUDA {head['cuda']}", flush=True)
    checks = []
    for name in args.only.split(","):
        parts, seconds = run_check(CHECKS[name], ctx)
        checks.append(
            {
                "name": name,
                "status": overall(parts),
                "seconds": seconds,
                "parts": [asdict(p) for p in parts],
            }
        )
        print(f"{name}: {checks[-1]['status']} ({seconds:.0f} s)", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps({**head, "checks": checks}, indent=1))
    print(f"\n{table(head, checks)}\n\nwritten: {args.out / 'gpu_check.json'}")
    for part in (p for c in checks for p in c["parts"] if "tb" in p["data"]):
        print(f"\n{part['name']}:\n{part['data']['tb']}", file=sys.stderr)
    return 1 if any(c["status"] == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
