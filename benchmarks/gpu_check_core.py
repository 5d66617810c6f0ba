"""What every check of ``benchmarks/gpu_check.py`` shares: its context, its result parts, the
time box around it and the dry-run message.

A check is a function ``check(ctx, parts)`` that appends one :class:`Part` per thing it
verified (PASS / FAIL / SKIP, a one-line message, numbers for the JSON). Appending as it goes
keeps what a check measured before it failed or ran out of time.
"""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
DRY = "no CUDA (dry run)"  # the message of every CUDA-only part in a dry run


@dataclass(frozen=True)
class Ctx:
    """Where a check runs: ``device`` is CUDA for the real checks and the CPU in a dry run."""

    device: torch.device
    dry: bool
    out: Path
    budget_s: float
    tolerance: float = 0.05  # bf16 vs fp32: relative difference of the final loss

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class Part:
    name: str
    status: str  # PASS | FAIL | SKIP
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def dry_skip(name: str) -> Part:
    """The part a dry run reports for what only a GPU can verify."""
    return Part(name, "SKIP", DRY)


def overall(parts: list[Part]) -> str:
    """FAIL if any part failed, else PASS if any passed, else SKIP."""
    statuses = {p.status for p in parts}
    return next((s for s in ("FAIL", "PASS") if s in statuses), "SKIP")


def attempt(parts: list[Part], name: str, measure: Callable[[], Part]) -> None:
    """Append ``measure()``, or a FAIL part with the error: one failing cell (an out-of-memory,
    say) does not stop the check's other cells."""
    try:
        parts.append(measure())
    except Exception as err:  # any failure is the check's result
        parts.append(failure(name, err))
    free_memory()


def failure(name: str, err: BaseException) -> Part:
    tb = "".join(traceback.format_exception(err))[-4000:]
    return Part(name, "FAIL", f"{type(err).__name__}: {err}".splitlines()[0][:300], {"tb": tb})


def free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class CheckTimeout(BaseException):
    """Raised in the main thread when a check outlives ``--budget-s`` (a BaseException, so a
    check's own ``except Exception`` does not swallow it)."""


_armed = {"on": False}


def _on_alarm(signum: int, frame: object) -> None:
    if _armed["on"]:  # raise once: the handler that catches it cannot be interrupted again
        _armed["on"] = False
        raise CheckTimeout


@contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckTimeout` inside the block after ``seconds`` (SIGALRM; the check's
    subprocesses are ended by the code that started them, on the way out)."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _armed["on"] = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _armed["on"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_check(check: Callable[[Ctx, list[Part]], None], ctx: Ctx) -> tuple[list[Part], float]:
    """The check's parts (its error or its timeout as a FAIL part) and its wall time."""
    parts: list[Part] = []
    start = time.perf_counter()
    try:
        with time_box(ctx.budget_s):
            check(ctx, parts)
    except CheckTimeout:
        parts.append(Part("budget", "FAIL", f"stopped: over its budget of {ctx.budget_s:g} s"))
    except Exception as err:
        parts.append(failure("error", err))
    free_memory()
    return parts, time.perf_counter() - start
