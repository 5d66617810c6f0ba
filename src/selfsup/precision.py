"""The one bf16 decision: where training and feature extraction autocast to bfloat16.

``train.precision``: ``bf16``, ``fp32``, or ``auto`` (bf16 where the device computes it
natively). The training loop and every feature extraction (evaluations, the online monitor,
pseudo-label teachers) read it through :func:`use_bf16` and :func:`autocast_for`.
"""

from __future__ import annotations

import contextlib

import torch

from selfsup.distributed import is_distributed, local_rank
from selfsup.errors import ConfigError
from selfsup.fields import check_choice

PRECISIONS = ("auto", "bf16", "fp32")
"""``train.precision``: auto (bf16 where the device computes it natively), bf16, fp32."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA compute capability 8 or more (A100, H100;
    T4 / V100 only emulate it), or a CPU with AVX-512 BF16 (measured here: the small ResNet's
    step 1.8x faster than fp32, benchmarks/RESULTS.md)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    is_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return device.type == "cpu" and is_bf16 is not None and bool(is_bf16())


def use_bf16(precision: str, device: torch.device) -> bool:
    """``train.precision``: bf16, fp32, or auto (bf16 where the device computes it natively)."""
    check_choice("train.precision", precision, PRECISIONS)
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def autocast_for(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the training device itself (a CUDA autocast does nothing on the CPU)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


DEVICES = ("auto", "cpu", "cuda")
"""``train.device``: auto (CUDA when available), cpu, cuda."""


def resolve_device(name: str) -> torch.device:
    """``train.device``: auto (CUDA when available), cpu or cuda; under torchrun each process
    takes its own GPU (``LOCAL_RANK``)."""
    check_choice("train.device", name, DEVICES)
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use auto or cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank()) if is_distributed() else torch.device("cuda")
