"""The training-step checks of ``benchmarks/gpu_check.py``: peak memory and images/s of
ResNet-50 in bf16 and fp16, bf16 against fp32 losses, and ``torch.compile``.

Methods are built as a run builds them (``load_config`` + ``selfsup.rundir.make_method``) and
stepped as ``selfsup.train.loop.fit`` steps them: views on the device, channels_last, the
method's ``before_step`` / ``after_backward`` / ``on_step_end``, the config's optimizer. fp16 is
``train.precision=fp16`` as the loop runs it: autocast to float16 around the method's forward
and a ``torch.amp.GradScaler`` (the recipe of official VICReg, Barlow Twins and DINO).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator

import torch

from gpu_check_core import ROOT, Ctx, Part, attempt, dry_skip
from selfsup.config import Config, load_config
from selfsup.data.views import make_views
from selfsup.methods import Method
from selfsup.precision import amp_dtype, autocast_for
from selfsup.rundir import make_method
from selfsup.train.optim import build_optimizer

CONFIGS = ROOT / "configs"
RGB = ["data.mean=[0.485, 0.456, 0.406]", "data.std=[0.229, 0.224, 0.225]"]
CIFAR = [*RGB, "views.size=32"]  # configs/cifar10 leave the size to the data
RN50 = [
    "backbone.name=resnet50",
    "backbone.stem=imagenet",
    "views.size=224",
    "train.batch_size=256",
]
TINY = [
    "backbone.name=small_resnet",
    "backbone.stem=small",
    "backbone.depths=[1, 1, 1]",
    "backbone.widths=[8, 16, 32]",
    "views.size=16",
    "train.batch_size=16",
]
TINY_HEAD = {
    "vicreg": ["method.projector=128-128-128"],
    "dino": ["method.out_dim=128", "method.hidden_dim=128", "method.bottleneck_dim=32"],
}
WARMUP_LR_STEPS = 100  # linear lr warm-up like the demo's (117 steps): 30 steps stay stable


def build(config: str, overrides: list[str], device: torch.device) -> tuple[Config, Method]:
    cfg = load_config(CONFIGS / config, [*overrides, f"train.device={device.type}"])
    method = make_method(cfg, len(cfg.data.mean or [0])).to(device)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
    return cfg, method


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The project's own ``autocast_for`` of ``train.precision`` (bf16, fp16 or fp32)."""
    return autocast_for(device, amp_dtype(precision, device))


class Steps:
    """Training steps of ``method`` on ``batches`` fixed batches of random uint8 images;
    ``steps(i)`` runs step ``i`` and returns its loss (detached, not synchronised)."""

    def __init__(
        self,
        cfg: Config,
        method: Method,
        precision: str,
        *,
        compiled: bool = False,
        batches: int = 1,
        total: int = 1000,
    ) -> None:
        tc, self.device = cfg.train, next(method.parameters()).device
        self.cfg, self.method, self.precision, self.total = cfg, method, precision, total
        self.model = torch.compile(method) if compiled else method
        groups = method.param_groups(tc.weight_decay)
        self.optimizer = build_optimizer(groups, tc, tc.lr * tc.batch_size / 256)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        shape = (batches, tc.batch_size, len(cfg.data.mean or [0]), cfg.views.size, cfg.views.size)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen).to(self.device)
        self.view_gen = torch.Generator(device=self.device).manual_seed(cfg.seed)

    def views(self, i: int) -> list[torch.Tensor]:
        with torch.no_grad():
            views = make_views(
                self.images[i % len(self.images)], self.method.view_specs, self.view_gen
            )
        if self.cfg.train.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views

    def __call__(self, i: int) -> torch.Tensor:
        views = self.views(i)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * min(1.0, (i + 1) / WARMUP_LR_STEPS)
        self.method.before_step(i, self.total, self.total)
        with autocast(self.device, self.precision):
            out = self.model(views)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.method.after_backward()
        self.scaler.unscale_(self.optimizer)  # (a no-op unless fp16), as the loop's _update
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.on_step_end(i, self.total)
        return out.loss.detach()


def seconds_per_step(steps: Steps, start: int, n: int) -> tuple[float, float]:
    """Mean seconds of steps ``start .. start + n - 1`` (CUDA events on a GPU) and the last
    loss."""
    if steps.device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        losses = [steps(start + i) for i in range(n)]
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000 / n, float(losses[-1])
    t0 = time.perf_counter()
    losses = [steps(start + i) for i in range(n)]
    return (time.perf_counter() - t0) / n, float(losses[-1])


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cuDNN autotuning on, as official VICReg, Barlow Twins and DINO train (restored after)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def recipe(ctx: Ctx, name: str) -> list[str]:
    return [*RGB, *(TINY + TINY_HEAD[name] if ctx.dry else RN50)]


def _memory_speed(ctx: Ctx, name: str, precision: str) -> Part:
    warmup, timed = (1, 2) if ctx.dry else (3, 5)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    cfg, method = build(f"imagenet100/{name}.yaml", recipe(ctx, name), ctx.device)
    steps = Steps(cfg, method, precision)
    for i in range(warmup):
        steps(i)
    sec, loss = seconds_per_step(steps, warmup, timed)
    batch = cfg.train.batch_size
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if ctx.cuda else None
    data = {
        "method": name,
        "precision": precision,
        "backbone": cfg.backbone.name,
        "size": cfg.views.size,
        "views": len(method.view_specs),
        "batch": batch,
        "images_per_s": batch / sec,
        "step_ms": 1000 * sec,
        "peak_mib": peak,
        "loss": loss,
        "warmup_steps": warmup,
        "timed_steps": timed,
        "grad_scale": steps.scaler.get_scale() if precision == "fp16" else None,
    }
    where = "" if ctx.cuda else "cpu dry-run, "
    memory = f"peak {peak:,.0f} MiB" if peak is not None else "peak n/a on the CPU"
    message = (
        f"{where}{cfg.backbone.name} {len(method.view_specs)}x{cfg.views.size} batch "
        f"{batch}: {batch / sec:,.0f} img/s, {memory}, loss {loss:.3f}"
    )
    return Part(f"{name} {precision}", "PASS" if math.isfinite(loss) else "FAIL", message, data)


def check_memory_speed(ctx: Ctx, parts: list[Part]) -> None:
    """Peak memory and images/s of VICReg and DINO (2 global crops), bf16 and fp16 + scaler."""
    with cudnn_benchmark():
        for name in ("vicreg", "dino"):
            for precision in ("bf16", "fp16"):
                measure = functools.partial(_memory_speed, ctx, name, precision)
                attempt(parts, f"{name} {precision}", measure)
    if ctx.dry:
        parts.append(dry_skip("ResNet-50 2x224 batch 256 on CUDA"))


def _losses(ctx: Ctx, precision: str, n: int) -> list[float]:
    tiny = [*TINY, *TINY_HEAD["vicreg"], "train.batch_size=32"] if ctx.dry else []
    overrides = ["data.mean=[0.286]", "data.std=[0.353]", "views.size=28", *tiny]
    cfg, method = build("demo.yaml", overrides, ctx.device)
    steps = Steps(cfg, method, precision, batches=4, total=n)
    return torch.stack([steps(i) for i in range(n)]).float().tolist()


def check_bf16_vs_fp32(ctx: Ctx, parts: list[Part], n: int = 30) -> None:
    """The demo recipe (VICReg, small ResNet) for ``n`` steps from the same seed in fp32 and
    in bf16: the final losses within ``ctx.tolerance`` of each other."""
    fp32, bf16 = _losses(ctx, "fp32", n), _losses(ctx, "bf16", n)
    rel = [abs(b - a) / max(abs(a), 1e-12) for a, b in zip(fp32, bf16, strict=True)]
    ok = all(map(math.isfinite, fp32 + bf16)) and rel[-1] <= ctx.tolerance
    where = "" if ctx.cuda else "cpu dry-run, "
    message = (
        f"{where}final loss fp32 {fp32[-1]:.4f}, bf16 {bf16[-1]:.4f}: {rel[-1]:.2%} "
        f"apart (tolerance {ctx.tolerance:.0%}); worst step {max(rel):.2%}"
    )
    data = {
        "steps": n,
        "fp32": fp32,
        "bf16": bf16,
        "final_rel_diff": rel[-1],
        "max_rel_diff": max(rel),
        "tolerance": ctx.tolerance,
    }
    parts.append(Part(f"vicreg demo recipe, {n} steps", "PASS" if ok else "FAIL", message, data))
    if ctx.dry:
        parts.append(dry_skip("bf16 on CUDA"))


def _graph_breaks(ctx: Ctx, name: str) -> Part:
    overrides = CIFAR + (TINY + TINY_HEAD[name] if ctx.dry else [])
    cfg, method = build(f"cifar10/{name}.yaml", overrides, ctx.device)
    views = Steps(cfg, method, "bf16").views(0)
    torch._dynamo.reset()
    with autocast(ctx.device, "bf16"):
        explained = torch._dynamo.explain(method)(views)
    reasons = [str(getattr(r, "reason", r))[:200] for r in explained.break_reasons[:5]]
    data = {
        "graphs": explained.graph_count,
        "graph_breaks": explained.graph_break_count,
        "reasons": reasons,
        "backbone": cfg.backbone.name,
    }
    message = f"{cfg.backbone.name}: {explained.graph_count} graph(s), " + (
        f"{explained.graph_break_count} break(s): {'; '.join(reasons)}" if reasons else "no break"
    )
    return Part(f"graph breaks {name}", "FAIL" if reasons else "PASS", message, data)


def _compile_speed(ctx: Ctx, warmup: int = 3, timed: int = 10) -> Part:
    result = {}
    for mode in ("eager", "compiled"):
        torch._dynamo.reset()
        cfg, method = build("cifar10/vicreg.yaml", CIFAR, ctx.device)
        steps = Steps(cfg, method, "bf16", compiled=mode == "compiled")
        t0 = time.perf_counter()
        for i in range(warmup):
            float(steps(i))
        result[f"{mode}_warmup_s"] = time.perf_counter() - t0
        sec, loss = seconds_per_step(steps, warmup, timed)
        result[f"{mode}_images_per_s"], result[f"{mode}_loss"] = cfg.train.batch_size / sec, loss
    speedup = result["compiled_images_per_s"] / result["eager_images_per_s"]
    message = (
        f"{cfg.backbone.name} 32 px batch {cfg.train.batch_size}, bf16: eager "
        f"{result['eager_images_per_s']:,.0f} img/s, compiled "
        f"{result['compiled_images_per_s']:,.0f} img/s ({speedup:.2f}x; compiling "
        f"{result['compiled_warmup_s']:.0f} s)"
    )
    ok = math.isfinite(result["compiled_loss"])
    return Part("speed vicreg", "PASS" if ok else "FAIL", message, {**result, "speedup": speedup})


def check_compile(ctx: Ctx, parts: list[Part]) -> None:
    """Graph breaks of VICReg and DINO (``torch._dynamo.explain``), then compiled vs eager
    images/s of VICReg on ResNet-18 (the compile itself is too slow for a dry run)."""
    for name in ("vicreg", "dino"):
        attempt(parts, f"graph breaks {name}", functools.partial(_graph_breaks, ctx, name))
    if ctx.dry:
        parts.append(dry_skip("compiled vs eager speed"))
        return
    with cudnn_benchmark():
        attempt(parts, "speed vicreg", functools.partial(_compile_speed, ctx))
