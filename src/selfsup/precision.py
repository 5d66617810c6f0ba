"""The one precision decision: where training and feature extraction autocast, and to what.

``train.precision``: ``bf16``, ``fp16``, ``fp32``, or ``auto`` (bf16 where the device computes
it natively, fp16 on a CUDA GPU without native bf16, fp32 on a CPU without it). The training
loop and every feature extraction (evaluations, the online monitor, pseudo-label teachers) read
it through :func:`amp_dtype` and :func:`autocast_for`; training in fp16 also scales the loss
(a ``torch.amp.GradScaler`` in :mod:`selfsup.train.loop`), inference needs no scaler.
"""

from __future__ import annotations

import contextlib

import torch

from selfsup.distributed import is_distributed, local_rank
from selfsup.errors import ConfigError
from selfsup.fields import check_choice

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
"""``train.precision``: auto (bf16 where native, fp16 on older GPUs, fp32 on other CPUs), bf16,
fp16 (with a gradient scaler in training), fp32."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA compute capability 8 or more (A100, H100;
    T4 / V100 only emulate it), or a CPU with AVX-512 BF16 (measured here: the small ResNet's
    step 1.8x faster than fp32, benchmarks/RESULTS.md)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    is_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return device.type == "cpu" and is_bf16 is not None and bool(is_bf16())


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device`` (None: float32). ``auto`` is
    bf16 where the device computes it natively; on a CUDA GPU without (compute capability
    under 8: T4, V100, whose tensor cores compute fp16 but only emulate bf16) fp16, with the
    loss scaled in training as the official VICReg, Barlow Twins and DINO code does on such
    GPUs; on a CPU without AVX-512 BF16 float32 (its fp16 kernels are no faster)."""
    check_choice("train.precision", precision, PRECISIONS)
    if precision != "auto":
        return _DTYPES[precision]
    if native_bf16(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


def autocast_for(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` (:func:`amp_dtype`) on the training device itself (a CUDA
    autocast does nothing on the CPU); None runs in float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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
