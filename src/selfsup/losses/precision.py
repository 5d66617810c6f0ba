"""Loss bodies in float32, whatever autocast the caller runs under.

Under ``torch.autocast`` (bf16 on CUDA or on the CPU) ``matmul`` / ``mm`` / ``linear`` run in
bf16 *even on float32 inputs*, so a ``.float()`` inside a loss does not protect a
cross-correlation, a covariance or a similarity matrix: Barlow Twins' diagonal would move in
steps of about 0.004, ISD's teacher at T = 0.01 would pick other neighbours. Every loss is
wrapped by :func:`full_precision`, which turns autocast off on the inputs' device and casts
floating-point tensor arguments to float32 (PyTorch's autocast docs: "disable autocast in the
region and cast inputs to float32").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def _to_fp32(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.float()
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return type(x)(_to_fp32(t) for t in x)
    return x


def _device_type(args: Sequence[Any]) -> str:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            return a[0].device.type
    return "cpu"


def full_precision(fn: F) -> F:
    """Run ``fn`` with autocast disabled on its inputs' device and float32 tensor inputs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(_device_type(args), enabled=False):
            return fn(*(_to_fp32(a) for a in args), **kwargs)

    return wrapper  # type: ignore[return-value]
