"""Precision: bf16 / fp16 autocast on the training device, bf16 only where native, fp16
through a GradScaler (a checkpoint's RNG states across devices: tests/test_train.py)."""

from __future__ import annotations

import pytest
import torch

from selfsup import precision


def test_bf16_on_the_cpu_really_autocasts_the_cpu() -> None:
    """train.precision=bf16 with train.device=cpu once built a CUDA autocast, which leaves CPU
    matmuls in fp32; the autocast must be the training device's own."""
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with precision.autocast_for(torch.device("cpu"), torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with precision.autocast_for(torch.device("cpu"), None):
        assert (a @ b).dtype == torch.float32
    assert precision.amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert precision.amp_dtype("fp32", torch.device("cpu")) is None


def test_auto_precision_picks_bf16_only_where_native(monkeypatch) -> None:
    cuda = torch.device("cuda", 0)
    for capability, want in (((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        # T4 / V100 only emulate bf16
        assert (precision.amp_dtype("auto", cuda) is torch.bfloat16) is want, capability
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert precision.amp_dtype("auto", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert precision.amp_dtype("auto", torch.device("cpu")) is torch.bfloat16


def test_feature_extraction_follows_the_runs_precision() -> None:
    """Evaluations extract features under the run's train.precision (the loop's decision),
    not a device rule of their own, fp16 included; the features come back float32 either way."""
    from selfsup.features import extract_features

    seen = []

    class Probe(torch.nn.Module):
        in_channels = 1
        num_features = 1

        def forward(self, x):
            on = torch.is_autocast_enabled("cpu")
            seen.append(torch.get_autocast_dtype("cpu") if on else None)
            return x.flatten(1).mean(1, keepdim=True)

    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    for prec, want in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", None)):
        seen.clear()
        feats = extract_features(Probe(), images, size=8, mean=[0.5], std=[0.5], precision=prec)
        assert seen == [want] and feats.dtype == torch.float32


def test_auto_precision_picks_fp16_on_a_gpu_without_native_bf16(monkeypatch) -> None:
    """``auto``: bf16 where native, fp16 on a CUDA GPU without it (T4, V100: their tensor cores
    compute fp16), fp32 on a CPU without AVX-512 BF16; fp16 may also be asked for by name."""
    cuda = torch.device("cuda", 0)
    for capability, want in (((7, 5), torch.float16), ((8, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert precision.amp_dtype("auto", cuda) is want, capability
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert precision.amp_dtype("auto", torch.device("cpu")) is None
    assert precision.amp_dtype("fp16", torch.device("cpu")) is torch.float16
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with precision.autocast_for(torch.device("cpu"), torch.float16):
        assert (a @ b).dtype == torch.float16


def _fp16_trainer(tmp_path, overrides: list[str] = ()):
    from selfsup.config import config_to_dict, load_config
    from selfsup.data.array import seeded_subset
    from selfsup.data.sources import load_dataset
    from selfsup.pipeline import resolve
    from selfsup.rundir import make_method
    from selfsup.train.loop import Trainer
    from tiny import TINY

    data = seeded_subset(load_dataset("synthetic", "train", image_size=16), 128, 0)
    over = [*TINY, "train.device=cpu", "train.precision=fp16", *overrides]
    cfg = resolve(load_config(None, over), data)
    method = make_method(cfg, data.channels)
    identity = config_to_dict(cfg)
    return Trainer(method, data.images, cfg.train, tmp_path, seed=cfg.seed, identity=identity)


@pytest.mark.parametrize("optimizer", ["lars", "sgd", "adamw"])
def test_fp16_steps_through_a_grad_scaler_that_skips_a_step_with_inf_gradients(
    tmp_path, optimizer
) -> None:
    """train.precision=fp16 on the CPU: the loss is scaled, the optimizer (LARS' trust ratio,
    the clip) sees the unscaled gradients, and a step whose gradients hold an inf leaves the
    weights as they were and halves the scale (torch.amp.GradScaler)."""
    trainer = _fp16_trainer(tmp_path, [f"train.optimizer={optimizer}", "train.grad_clip=100"])
    method, scaler, opt = trainer.method, trainer.scaler, trainer.optimizer
    assert scaler.is_enabled()
    scaled, stepped, weights, scale = {}, {}, {}, {}
    real_after, real_end, real_step = method.after_backward, method.on_step_end, opt.step

    def norm() -> torch.Tensor:
        grads = [p.grad.norm() for p in method.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack(grads))

    def after_backward() -> None:
        real_after()
        if trainer.state.step == 5:
            next(p for p in method.parameters() if p.grad is not None).grad.fill_(torch.inf)
        scaled[trainer.state.step] = norm()

    def step(*args, **kwargs):
        stepped[trainer.state.step] = norm()
        return real_step(*args, **kwargs)

    def on_step_end(at: int, total: int) -> None:
        real_end(at, total)
        weights[at] = [p.detach().clone() for p in method.parameters()]
        scale[at] = scaler.get_scale()

    method.after_backward, method.on_step_end, opt.step = after_backward, on_step_end, step
    trainer.run()
    assert scale[5] == scale[4] / 2 and 5 not in stepped  # the inf step: skipped, backed off
    assert all(torch.equal(a, b) for a, b in zip(weights[4], weights[5], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(weights[6], weights[7], strict=True))
    assert stepped  # the optimizer ran on the other steps (unless fp16 overflowed there)
    for i, seen in stepped.items():  # it saw the gradients unscaled
        used = scale[i - 1] if i else 65536.0
        torch.testing.assert_close(seen, scaled[i] / used, rtol=1e-3, atol=0, msg=str(i))


def test_resume_restores_the_grad_scale_and_old_checkpoints_still_load(tmp_path) -> None:
    from selfsup.checkpoint import load_checkpoint

    trainer = _fp16_trainer(tmp_path, ["train.epochs=1"])
    real_after = trainer.method.after_backward

    def after_backward() -> None:  # two inf steps: the scale is off its initial value
        real_after()
        if trainer.state.step in (1, 2):
            next(p for p in trainer.method.parameters() if p.grad is not None).grad.fill_(torch.inf)

    trainer.method.after_backward = after_backward
    trainer.run()
    ckpt_path = tmp_path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["scaler"]["scale"] <= 65536.0 / 4
    again = _fp16_trainer(tmp_path, ["train.epochs=2"])
    again.resume()
    assert again.scaler.get_scale() == ckpt["scaler"]["scale"]
    del ckpt["scaler"]  # a checkpoint written before fp16 existed
    torch.save(ckpt, ckpt_path)
    old = _fp16_trainer(tmp_path, ["train.epochs=2"])
    old.resume()
    assert old.scaler.get_scale() == 65536.0  # a fresh scaler
    old.run()
