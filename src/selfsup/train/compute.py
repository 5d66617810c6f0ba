"""What a pretraining run cost: ``results.json["compute"]``.

``params`` counts parameters (the backbone's and the whole method's, EMA teachers and heads
included); ``flops_per_image`` is counted by :class:`torch.utils.flop_counter.FlopCounterMode`
on one forward of the backbone at the training view size (a multiply-add counts as 2 FLOPs, so
a convolution or a linear layer is 2 x its MACs) and ``train_step_flops_per_image`` on one
training step of the method (every view's forward, the loss and the backward) over two images,
divided by two; ``train_flops`` = that x the images seen, the estimate of the run's training
compute that ``selfsup table --plot-compute`` puts on its x axis (in the spirit of nanoGPT's
``estimate_mfu`` and the "FLOPs x tokens" axis of scaling-law plots). Wall time and throughput
come from the loop's own clock (``train_seconds`` in the checkpoint: training steps only, the
online monitor excluded), so a resumed run adds up its sessions.
"""

from __future__ import annotations

import copy
import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from selfsup.data.views import make_views
from selfsup.methods.base import Method

CPUINFO = Path("/proc/cpuinfo")


def count_params(module: nn.Module) -> int:
    """The number of parameter values of ``module`` (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters())


def forward_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``module(x)`` in eval mode, without gradients (its mode is restored)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def train_step_flops(
    method: Method, images: torch.Tensor, labels: torch.Tensor | None = None, *, seed: int = 0
) -> int:
    """FLOPs of one training step (views' forward, loss, backward; the optimizer update is
    left out) on the uint8 batch ``images`` (B >= 2 for batch norm), counted on a copy of
    ``method`` so that its weights, batch-norm statistics and queues stay as they were."""
    twin = copy.deepcopy(method).train()
    device = next(twin.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        views = make_views(images.to(device), twin.view_specs, gen)
    extra = () if labels is None else (labels.to(device),)
    twin.before_step(0, 1, 1)
    with FlopCounterMode(display=False) as counter:
        twin(views, *extra).loss.backward()
    return int(counter.get_total_flops())


def hardware(device: torch.device) -> dict[str, Any]:
    """What ran on ``device``: ``device`` is the GPU's name (CUDA) or the CPU's model (``model
    name`` of /proc/cpuinfo, else :func:`platform.processor`); also the CPU model, the logical
    CPU count and the torch version."""
    cpu = platform.processor() or platform.machine()
    if CPUINFO.is_file():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "device": gpu or cpu,
        "gpu": gpu,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def compute_record(
    method: Method,
    sample: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    size: int,
    steps: int,
    batch_size: int,
    train_seconds: float,
) -> dict[str, Any]:
    """``results.json["compute"]`` of a run: ``method`` trained for ``steps`` steps of
    ``batch_size`` images in ``train_seconds``; ``sample`` (2, C, H, W) uint8 training images
    (and their ``labels`` for a method that takes them) for the training-step count (None
    with fewer than two: batch norm cannot train on one); ``size`` the side of its training
    views."""
    backbone = method.backbone
    device = next(backbone.parameters()).device
    x = torch.zeros(1, sample.shape[1], size, size, device=device)
    step_flops = None
    if len(sample) >= 2:
        step_flops = train_step_flops(method, sample, labels) // len(sample)
    seen = steps * batch_size
    return {
        "params": {
            "backbone": count_params(backbone),
            "total": count_params(method),
            "trainable": sum(p.numel() for p in method.parameters() if p.requires_grad),
        },
        "image_size": size,
        "flops_per_image": forward_flops(backbone, x),
        "train_step_flops_per_image": step_flops,
        "steps": steps,
        "images_seen": seen,
        "train_flops": None if step_flops is None else step_flops * seen,
        "train_wall_s": round(train_seconds, 3),
        "images_per_s": round(seen / train_seconds, 2) if train_seconds > 0 else None,
        "hardware": hardware(device),
    }
