"""The DDP check of ``benchmarks/gpu_check.py``: 2 processes x B images against 1 process x 2B.

Two gloo ranks share the one GPU (``torch.multiprocessing`` spawn, ``init_method=file://``);
each takes its half of a fixed batch through a small ResNet (selfsup's ``small_resnet``) plus a
linear head converted to ``SyncBatchNorm``, wrapped in DDP, and takes one SGD step on a mean
squared error. A single process steps the same model (plain BatchNorm) on the whole batch.
SyncBatchNorm normalises with the global batch's statistics and DDP averages the gradients, so
the parameters (and BN running statistics) must agree within 1e-5. TF32 is off in both, so
that the comparison measures the reduction, not the matmul precision.

Dry run (CPU): SyncBatchNorm needs a GPU tensor, so the ranks keep plain BatchNorm, which
normalises each rank's half alone; the single process then averages the losses of the two
halves, each normalised alone. That checks the spawn, the gloo group and DDP's averaging.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gpu_check_core import Ctx, Part, dry_skip
from selfsup.backbones import build_backbone
from selfsup.config import BackboneConfig

WORLD, B, SIZE, OUT_DIM, LR, TOL = 2, 8, 32, 16, 0.1, 1e-5


def _model(device: torch.device, sync: bool) -> nn.Module:
    torch.manual_seed(0)
    cfg = BackboneConfig(name="small_resnet", depths=[1, 1, 1], widths=[8, 16, 32])
    backbone = build_backbone(cfg, in_channels=3, image_size=SIZE)
    model = nn.Sequential(backbone, nn.Linear(backbone.num_features, OUT_DIM))
    if sync:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device)


def _batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(WORLD * B, 3, SIZE, SIZE, generator=gen)
    return x.to(device), torch.randn(WORLD * B, OUT_DIM, generator=gen).to(device)


def _step(model: nn.Module, loss: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """fp32 matmuls and convolutions in full fp32 (restored after)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _rank(rank: int, init: str, backend: str, device_type: str, sync: bool, out: str) -> None:
    """One DDP rank: its half of the batch, one step, its state dict saved to ``out``."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    dist.init_process_group(backend, init_method=f"file://{init}", rank=rank, world_size=WORLD)
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", rank if backend == "nccl" else 0)
        torch.cuda.set_device(device)
    model = _model(device, sync)
    ddp = DistributedDataParallel(
        model, device_ids=[device.index] if device.index is not None else None
    )
    x, y = _batch(device)
    rows = slice(rank * B, (rank + 1) * B)
    _step(ddp, F.mse_loss(ddp(x[rows]), y[rows]))
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _spawn(backend: str, device_type: str, sync: bool, tmp: Path) -> list[dict]:
    """Run the ranks; a rank's exception is raised here (ProcessRaisedException)."""
    args = (str(tmp / "init"), backend, device_type, sync, str(tmp))
    context = mp.start_processes(_rank, args=args, nprocs=WORLD, join=False, start_method="spawn")
    try:
        while not context.join(timeout=1):
            pass
    finally:  # a timeout (CheckTimeout) or a failed rank: end the ranks still running
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def _reference(device: torch.device, sync: bool) -> dict:
    """One process: the whole batch (sync) or the mean of the halves' losses, each half
    normalised alone (plain BatchNorm in the ranks)."""
    x, y = _batch(device)
    with _no_tf32():
        model = _model(device, sync=False)
        if sync:
            loss = F.mse_loss(model(x), y)
        else:
            rows = [slice(r * B, (r + 1) * B) for r in range(WORLD)]
            loss = torch.stack([F.mse_loss(model(x[i]), y[i]) for i in rows]).mean()
        _step(model, loss)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _max_diff(a: dict, b: dict, keys: list[str]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def _compare(ranks: list[dict], ref: dict, sync: bool) -> dict:
    """Max differences of every rank against the single process and between the ranks: the
    parameters, and with SyncBatchNorm the BN running statistics too (plain BatchNorm keeps
    each rank's own half's statistics)."""
    floats = [k for k, v in ref.items() if v.is_floating_point()]
    params = [k for k in floats if "running_" not in k]
    checked = floats if sync else params
    return {
        "vs_single": max(_max_diff(r, ref, checked) for r in ranks),
        "rank0_vs_rank1": _max_diff(ranks[0], ranks[1], checked),
        "moved": _max_diff(ranks[0], _reference_start(), params),
    }


def _reference_start() -> dict:
    return {k: v.detach().cpu() for k, v in _model(torch.device("cpu"), False).state_dict().items()}


def _equivalence(ctx: Ctx, backend: str, sync: bool) -> Part:
    device = ctx.device if sync else torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        ranks = _spawn(backend, device.type, sync, Path(tmp))
    data = _compare(ranks, _reference(device, sync), sync)
    worst = max(data["vs_single"], data["rank0_vs_rank1"])
    ok = worst <= TOL and data["moved"] > 100 * TOL  # (and the step did change the weights)
    bn = "SyncBatchNorm" if sync else "plain BatchNorm"
    place = {"nccl": "2 GPUs", "cuda": "one GPU", "cpu": "the CPU"}
    name = f"{bn}, 2 {backend} ranks on {place[backend if backend == 'nccl' else device.type]}"
    message = (
        f"{'' if sync else 'cpu dry-run, '}2 ranks x {B} vs 1 process x {2 * B}: max |diff| "
        f"{worst:.1e} (tolerance {TOL:g}; the step moved weights by up to {data['moved']:.1e})"
    )
    return Part(name, "PASS" if ok else "FAIL", message, data)


def _gloo_refused(err: BaseException) -> bool:
    text = str(err).lower()
    return "gloo" in text or "not supported" in text or "unsupported" in text


def check_ddp(ctx: Ctx, parts: list[Part]) -> None:
    """2 x B with DDP + SyncBatchNorm vs 1 x 2B (dry run: plain BatchNorm on the CPU)."""
    if ctx.dry:
        parts.append(_equivalence(ctx, "gloo", sync=False))
        parts.append(dry_skip("SyncBatchNorm, 2 gloo ranks on one GPU"))
        return
    try:
        parts.append(_equivalence(ctx, "gloo", sync=True))
    except Exception as err:
        if not _gloo_refused(err):
            raise
        if torch.cuda.device_count() < WORLD:
            reason = f"SyncBatchNorm did not run on gloo ({str(err).splitlines()[-1][:200]})"
            parts.append(Part("SyncBatchNorm", "SKIP", f"{reason}; NCCL needs 2 GPUs"))
            return
        parts.append(_equivalence(ctx, "nccl", sync=True))
