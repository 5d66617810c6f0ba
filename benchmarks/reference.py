"""The pipeline everyone else uses, for side-by-side benchmarks: torchvision v2 per-image
transforms of the same recipe in a multi-worker ``DataLoader``, feeding the same selfsup method,
optimizer, schedules and precision as :func:`selfsup.train.loop.fit`.

Only the data path differs from selfsup's loop, which is what the benchmarks measure: here each
image is augmented on its own by ``torchvision.transforms.v2`` in ``os.cpu_count()`` worker
processes (solo-learn, lightly, VISSL and mmselfsup feed their models this way); selfsup makes
each view for the whole batch at once with tensor ops on the training device.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from selfsup.config import TrainConfig
from selfsup.data.views import ViewSpec
from selfsup.methods import Method
from selfsup.parts.schedules import warmup_cosine
from selfsup.precision import amp_dtype, autocast_for
from selfsup.train.loop import _weight_decay  # the loop's own weight-decay schedule
from selfsup.train.optim import build_optimizer


def hardware(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model name and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor() or "CPU",
        )
        if Path("/proc/cpuinfo").exists()
        else (platform.processor() or "CPU")
    )
    return f"{model}, {os.cpu_count()} cores"


def pytorch_default_step(tc: TrainConfig) -> TrainConfig:
    """``tc`` with the step as a plain PyTorch loop runs it unless told otherwise: fp32 (no bf16
    autocast) and NCHW (no channels_last); the reference's second setting in the benchmarks."""
    return replace(tc, precision="fp32", channels_last=False)


def torchvision_pipeline(spec: ViewSpec) -> v2.Compose:
    """The per-image torchvision v2 equivalent of ``spec`` (uint8 CHW in, float CHW out)."""
    interp = v2.InterpolationMode(spec.interpolation)
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                spec.size, spec.crop_scale, spec.crop_ratio, interpolation=interp, antialias=True
            ),
            v2.RandomHorizontalFlip(spec.hflip_p),
            v2.RandomApply(
                [v2.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)],
                p=spec.jitter_p,
            ),
            v2.RandomGrayscale(spec.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(spec.blur_kernel, spec.blur_sigma)], p=spec.blur_p),
            v2.RandomSolarize(spec.solarize_threshold * 255, p=spec.solarize_p),  # on uint8
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(spec.mean), list(spec.std)),
        ]
    )


class Views(Dataset):
    """uint8 images (N, C, H, W); item i -> one view per spec, by the torchvision pipelines."""

    def __init__(self, images: torch.Tensor, specs: list[ViewSpec]) -> None:
        self.images = images
        self.pipelines = [torchvision_pipeline(s) for s in specs]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(p(self.images[i]) for p in self.pipelines)


def loader(images: torch.Tensor, specs: list[ViewSpec], batch: int, seed: int) -> DataLoader:
    """Shuffled batches of views, every core a worker, last partial batch dropped (as
    selfsup's ``BatchStream``), pinned when CUDA is there (as the reference libraries do)."""
    return DataLoader(
        Views(images, specs),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=os.cpu_count() or 1,
        persistent_workers=True,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
    )


def reference_fit(
    method: Method,
    images: torch.Tensor,
    tc: TrainConfig,
    device: torch.device,
    *,
    seed: int,
    on_epoch: Callable[[Method, int, float], None] | None = None,
) -> float:
    """Train ``method`` as :func:`selfsup.train.loop.fit` does (lr warm-up + cosine scaled by
    batch / 256, the method's parameter groups and optimizer, autocast by ``train.precision``,
    channels_last, the method's hooks), but fed by :func:`loader`. ``on_epoch(method, epoch,
    train_seconds)`` runs after each epoch, outside the timed region. Returns the training
    seconds (data loading included, hooks excluded)."""
    torch.manual_seed(seed)
    method.to(device)
    if tc.channels_last:
        method.to(memory_format=torch.channels_last)
    data = loader(images, method.view_specs, tc.batch_size, seed)
    steps_per_epoch = len(data)
    total = tc.epochs * steps_per_epoch
    warmup = round(tc.warmup_epochs * steps_per_epoch)
    base_lr = tc.lr * tc.batch_size / 256
    groups = method.param_groups(tc.weight_decay)
    decays = [not g["exclude"] for g in groups]
    scales = [
        g.get("lr_scale", 1.0) * (1.0 if d else tc.bias_lr_scale)
        for g, d in zip(groups, decays, strict=True)
    ]
    optimizer = build_optimizer(groups, tc, base_lr)
    dtype = amp_dtype(tc.precision, device)
    autocast = autocast_for(device, dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)  # as the loop
    step, seconds = 0, 0.0
    method.train()
    for epoch in range(tc.epochs):
        t0 = time.perf_counter()
        for views in data:
            views = [v.to(device, non_blocking=True) for v in views]
            if tc.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            lr = warmup_cosine(
                step, total, base=base_lr, warmup_steps=warmup, final=base_lr * tc.final_lr_ratio
            )
            for group, decayed, scale in zip(optimizer.param_groups, decays, scales, strict=True):
                group["lr"] = lr * scale
                group["weight_decay"] = _weight_decay(tc, step, total) if decayed else 0.0
            method.before_step(step, total, steps_per_epoch)
            with autocast:
                out = method(views)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out.loss).backward()
            method.after_backward()
            scaler.unscale_(optimizer)
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(method.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            method.on_step_end(step, total)
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        if on_epoch is not None:
            method.eval()
            on_epoch(method, epoch + 1, seconds)
            method.train()
    return seconds
