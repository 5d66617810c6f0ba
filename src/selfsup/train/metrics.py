"""The run's ``metrics.jsonl``: per-step values kept on the device and flushed to the host in
one copy every ``train.log_every`` steps (:func:`flush`), checked for NaN / inf there. Under
torchrun the logged values are the mean over ranks (one all-reduce per flush, as official
DINO's ``MetricLogger.synchronize_between_processes``), not rank 0's own."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup.atomic import write_text_atomic
from selfsup.distributed import mean_across_ranks
from selfsup.progress import Progress
from selfsup.tensorboard import TensorBoardLog
from selfsup.train.guards import ADVICE, TrainingDiverged, kept


class MetricsLog:
    """Append-only JSON-lines metrics, one record per line (and, with ``tensorboard``, the
    same records as TensorBoard scalars beside them: :mod:`selfsup.tensorboard`)."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path, self.enabled = path, enabled
        self.tb = TensorBoardLog(path.parent) if enabled and tensorboard else None

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.enabled and records:
            with self.path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            if self.tb is not None:
                self.tb.write(records)

    def truncate_after(self, step: int) -> None:
        """Drop the records a checkpoint after ``step`` steps does not cover (left by an
        interrupted epoch) before resuming: a step's record carries its 0-based index, so
        those from ``step`` on go; an epoch's or monitor's record carries the steps done when
        it was written, so those past ``step`` go (the last epoch's monitor record stays)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = []
        for line in self.path.read_text().splitlines():
            rec = json.loads(line) if line.strip() else None
            if rec is None:
                continue
            at = rec.get("step", -1)
            if at < step or (at == step and "loss" not in rec and "skipped" not in rec):
                keep.append(line)
        write_text_atomic(self.path, "".join(line + "\n" for line in keep))


@dataclass
class Pending:
    """Per-step values kept on the device until the next flush."""

    steps: list[int]
    losses: list[torch.Tensor]
    parts: list[dict[str, torch.Tensor]]
    lrs: list[float]
    started: float
    images: int = 0

    @classmethod
    def empty(cls) -> Pending:
        return cls([], [], [], [], time.perf_counter())

    def add(self, step: int, loss: torch.Tensor, parts: dict[str, torch.Tensor], lr: float, n: int):
        self.steps.append(step)
        self.losses.append(loss.detach())
        self.parts.append(parts)
        self.lrs.append(lr)
        self.images += n


def flush(pending: Pending, epoch: int, log: MetricsLog, bar: Progress, ckpt_path: Path) -> Pending:
    """Copy the buffered per-step values to the host once, check them, and log them; returns
    an empty buffer for the steps that follow."""
    if not pending.steps:
        return Pending.empty()
    names = list(pending.parts[0])
    local, stacked = _local_and_mean(pending, names)
    elapsed = max(time.perf_counter() - pending.started, 1e-9)
    ips = pending.images / elapsed
    finite = [_all_finite(values) for values in local]
    if not all(_all_finite(values) for values in stacked) and all(finite):
        raise TrainingDiverged(  # another rank diverged (its values reach the mean): stop with it
            f"the loss became non-finite on another process by step {pending.steps[-1]} (epoch "
            f"{epoch}); see its message. Lower train.lr, set train.grad_clip (e.g. 1.0) or use "
            "train.precision=fp32."
        )
    records = []
    for s, lr, values, mine in zip(pending.steps, pending.lrs, stacked, local, strict=True):
        if not _all_finite(mine):
            raise TrainingDiverged(
                f"the loss became non-finite ({mine[0]}) at step {s} (epoch {epoch}); "
                f"{kept(ckpt_path)}. {ADVICE}"
            )
        rec = {"step": s, "epoch": epoch, "loss": values[0], "lr": lr, "images_per_s": ips}
        rec.update(dict(zip(names, values[1:], strict=True)))
        records.append(rec)
    log.write(records)
    bar.set_postfix(loss=f"{stacked[-1][0]:.4f}", ips=f"{ips:.0f}", refresh=False)
    return Pending.empty()


def _local_and_mean(pending: Pending, names: list[str]) -> tuple[list[list[float]], ...]:
    """Each step's [loss, *parts] on this rank and their mean over ranks, in one all-reduce
    and one copy to the host (a non-finite value on any rank makes the mean non-finite)."""
    local = torch.stack(
        [
            torch.stack([loss, *(p[n].float().to(loss.device) for n in names)])
            for loss, p in zip(pending.losses, pending.parts, strict=True)
        ]
    )
    both = torch.stack([local, mean_across_ranks(local)]).tolist()
    return both[0], both[1]


def _all_finite(values: list[float]) -> bool:
    return all(v == v and abs(v) != float("inf") for v in values)


def log_skipped(
    log: MetricsLog, bar: Progress, step: int, epoch: int, skipped: int, limit: int, ckpt_path: Path
) -> None:
    """A step whose loss was NaN / inf was skipped (no backward, no update): log it, warn, and
    stop once more than ``train.skip_nonfinite`` steps were skipped."""
    if skipped > limit:
        raise TrainingDiverged(
            f"{skipped} steps had a non-finite loss (train.skip_nonfinite={limit}), the last at "
            f"step {step} (epoch {epoch}); {kept(ckpt_path)}. {ADVICE}"
        )
    log.write(
        [{"step": step, "epoch": epoch, "skipped": "non-finite loss", "skipped_total": skipped}]
    )
    bar.write(f"selfsup: step {step}: non-finite loss, step skipped ({skipped} of {limit} allowed)")
