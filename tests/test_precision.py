"""Precision and device state: bf16 autocast on the training device, bf16 only where native,
a checkpoint's GPU RNG state restorable on a machine with fewer GPUs."""

from __future__ import annotations

import torch

from selfsup import precision
from selfsup.train import state


def test_bf16_on_the_cpu_really_autocasts_the_cpu() -> None:
    """train.precision=bf16 with train.device=cpu once built a CUDA autocast, which leaves CPU
    matmuls in fp32; the autocast must be the training device's own."""
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with precision.autocast_for(torch.device("cpu"), True):
        assert (a @ b).dtype == torch.bfloat16
    with precision.autocast_for(torch.device("cpu"), False):
        assert (a @ b).dtype == torch.float32
    assert precision.use_bf16("bf16", torch.device("cpu")) and not precision.use_bf16(
        "fp32", torch.device("cpu")
    )


def test_auto_precision_picks_bf16_only_where_native(monkeypatch) -> None:
    cuda = torch.device("cuda", 0)
    for capability, want in (((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert precision.use_bf16("auto", cuda) is want, capability  # T4 / V100 only emulate bf16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not precision.use_bf16("auto", torch.device("cpu"))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert precision.use_bf16("auto", torch.device("cpu"))


def test_checkpoint_with_more_gpu_states_than_gpus_resumes(monkeypatch) -> None:
    """Older checkpoints stored one CUDA RNG state per visible GPU; set_rng_state_all raised
    IndexError on a machine with fewer. Now one state (the training GPU's) is stored and an
    old list restores its first entry on the training device."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: calls.append((s, d)))
    monkeypatch.setattr(
        torch.cuda, "set_rng_state_all", lambda s: (_ for _ in ()).throw(IndexError("no GPU 3"))
    )
    cpu_state = torch.get_rng_state()
    states = [torch.full((8,), i, dtype=torch.uint8) for i in range(4)]  # four GPUs' states
    device = torch.device("cuda", 0)
    state.set_rng_state({"torch": cpu_state, "cuda": states}, device)
    assert len(calls) == 1 and torch.equal(calls[0][0], states[0]) and calls[0][1] == device
    state.set_rng_state({"torch": cpu_state, "cuda": states[2]}, device)  # the new format
    assert torch.equal(calls[1][0], states[2])
    state.set_rng_state({"torch": cpu_state}, torch.device("cpu"))  # a CPU run: none needed
    assert len(calls) == 2
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: states[1])
    saved = state.rng_state(device)
    assert torch.equal(saved["cuda"], states[1])  # one state, not a list per visible GPU


def test_feature_extraction_follows_the_runs_precision() -> None:
    """Evaluations extract features under the run's train.precision (the loop's decision),
    not a device rule of their own; the features come back float32 either way."""
    from selfsup.features import extract_features

    seen = []

    class Probe(torch.nn.Module):
        in_channels = 1
        num_features = 1

        def forward(self, x):
            seen.append(torch.is_autocast_enabled("cpu"))
            return x.flatten(1).mean(1, keepdim=True)

    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    for prec, want in (("bf16", True), ("fp32", False)):
        seen.clear()
        feats = extract_features(Probe(), images, size=8, mean=[0.5], std=[0.5], precision=prec)
        assert seen == [want] and feats.dtype == torch.float32
