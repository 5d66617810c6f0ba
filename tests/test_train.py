from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfsup.checkpoint import load_checkpoint
from selfsup.config import load_config
from selfsup.data.array import seeded_subset
from selfsup.data.sources import load_dataset
from selfsup.errors import CheckpointError
from selfsup.pipeline import resolve, train_run
from selfsup.rundir import make_method
from selfsup.train import loop
from selfsup.train.loop import BatchStream, TrainingDiverged
from tiny import TINY


def setup(overrides: list[str] | None = None):
    cfg = load_config(None, TINY + (overrides or []))
    data = seeded_subset(load_dataset("synthetic", "train", image_size=16), 128, 0)
    cfg = resolve(cfg, data)
    return cfg, data


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_fit_writes_metrics_and_checkpoint(tmp_path) -> None:
    cfg, data = setup()
    method = make_method(cfg, data.channels)
    before = [p.detach().clone() for p in method.parameters()]
    train_run(method, data.images, cfg, tmp_path)
    recs = records(tmp_path)
    assert [r["step"] for r in recs] == list(range(8))  # 2 epochs x 128 / 32 steps, every step
    for r in recs:
        assert {"loss", "lr", "images_per_s", "invariance", "variance", "covariance"} <= set(r)
        assert torch.isfinite(torch.tensor(r["loss"]))
    assert recs[0]["lr"] == 0.0 and recs[2]["lr"] > 0  # warm-up from zero
    changed = [not torch.equal(a, b) for a, b in zip(before, method.parameters(), strict=True)]
    assert all(changed)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 8
    assert {"model", "optimizer", "config"} <= set(ckpt)


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch) -> None:
    cfg, data = setup(["train.epochs=3"])
    full = train_run(make_method(cfg, data.channels), data.images, cfg, tmp_path / "full")

    calls = {"n": 0}
    real = loop.make_views

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # the 3rd step of the second epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "make_views", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_run(make_method(cfg, data.channels), data.images, cfg, tmp_path / "cut")
    monkeypatch.setattr(loop, "make_views", real)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = train_run(
        make_method(cfg, data.channels), data.images, cfg, tmp_path / "cut", resume=True
    )

    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    full_recs, cut_recs = records(tmp_path / "full"), records(tmp_path / "cut")
    assert [r["step"] for r in cut_recs] == list(range(12))  # no duplicate or missing step
    for a, b in zip(full_recs, cut_recs, strict=True):
        assert a["loss"] == b["loss"] and a["lr"] == b["lr"]


def _cut_mid_epoch(cfg, data, run_dir, monkeypatch) -> None:
    """Train ``cfg`` into ``run_dir`` and stop it at the third step of the second epoch, after
    its mid-epoch checkpoint of step 6 (``train.checkpoint_every=2``)."""
    calls, real = {"n": 0}, loop.make_views

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "make_views", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_run(make_method(cfg, data.channels), data.images, cfg, run_dir)
    monkeypatch.setattr(loop, "make_views", real)


@pytest.mark.parametrize("recorded", [True, False])
def test_a_mid_epoch_checkpoint_from_another_device_type_resumes_with_a_warning(
    tmp_path, monkeypatch, capsys, recorded
) -> None:
    """Issue #26.6a: a mid-epoch checkpoint written on a GPU holds a CUDA view generator's
    state (16 bytes), which a CPU generator refused with a raw ``RuntimeError: Expected a
    CPUGeneratorImplState of size 5056 ... found 16``. Now each state carries its device type
    (an older, untagged one is told by its size); one of another type reseeds the generator
    from the checkpoint's step, with one line on stderr saying the resume is not bit-exact."""
    cfg, data = setup(["train.checkpoint_every=2"])
    _cut_mid_epoch(cfg, data, tmp_path, monkeypatch)
    path = tmp_path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    assert (ckpt["epoch"], ckpt["epoch_step"]) == (1, 2)
    # a CUDA generator's state: its Philox seed and offset, 8 bytes each
    ckpt["view_generator"] = torch.tensor([7] + [0] * 7 + [4] + [0] * 7, dtype=torch.uint8)
    ckpt["view_generator_device"] = "cuda" if recorded else None
    ckpt["rng"] = {"torch": torch.get_rng_state(), "cuda": [ckpt["view_generator"]] * 4}
    torch.save(ckpt, path)  # (older checkpoints also kept every GPU's global RNG state)
    capsys.readouterr()
    train_run(make_method(cfg, data.channels), data.images, cfg, tmp_path, resume=True)
    said = [line for line in capsys.readouterr().err.splitlines() if "bit-exact" in line]
    assert len(said) == 1, said
    assert "written mid-epoch on cuda" in said[0] and "trains on cpu" in said[0]
    assert load_checkpoint(path)["step"] == 8  # and training went on to its end
    assert [r["step"] for r in records(tmp_path) if "loss" in r] == list(range(8))


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path) -> None:
    cfg, data = setup(["train.epochs=1"])
    train_run(make_method(cfg, data.channels), data.images, cfg, tmp_path)
    saved = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    cfg.train.epochs = 2
    method = make_method(cfg, data.channels)
    method.loss_kwargs["sim_weight"] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"non-finite .* step 4 .*last good checkpoint"):
        train_run(method, data.images, cfg, tmp_path, resume=True)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == saved


def test_resume_refuses_another_method_config(tmp_path) -> None:
    cfg, data = setup(["train.epochs=1"])
    train_run(make_method(cfg, data.channels), data.images, cfg, tmp_path)
    cfg.backbone.name = "resnet18"
    with pytest.raises(CheckpointError, match=r"backbone\.name='small_resnet'"):
        train_run(make_method(cfg, data.channels), data.images, cfg, tmp_path, resume=True)


def test_damaged_checkpoint_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointError, match="not a selfsup checkpoint"):
        load_checkpoint(path)


def test_batch_stream_is_seeded_sharded_and_drops_last() -> None:
    s = BatchStream(10, 4, seed=0)
    batches = list(s.epoch(0))
    assert len(batches) == 2 and all(len(b) == 4 for b in batches)
    assert [b.tolist() for b in s.epoch(0)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in s.epoch(1)] != [b.tolist() for b in batches]
    r0 = list(BatchStream(10, 4, seed=0, rank=0, world=2).epoch(0))
    r1 = list(BatchStream(10, 4, seed=0, rank=1, world=2).epoch(0))
    for full, a, b in zip(batches, r0, r1, strict=True):
        assert sorted(torch.cat([a, b]).tolist()) == sorted(full.tolist())


def test_the_shuffle_is_drawn_on_the_cpu_whatever_device_holds_the_images(monkeypatch) -> None:
    """Issue #26.2: each rank decides alone whether the images fit on its GPU; the shuffle was
    drawn by a generator on that device, and a CUDA generator gives another permutation than
    a CPU one from the same seed, so ranks that decided differently took overlapping shards.
    The permutation now always comes from a CPU generator (then moves to the device)."""
    drawn = []
    real = torch.randperm

    def spy(n, *, generator=None, **kw):
        drawn.append((generator.device.type, kw.get("device")))
        return real(n, generator=generator)

    monkeypatch.setattr(torch, "randperm", spy)
    cpu = [b.tolist() for b in BatchStream(12, 4, seed=5, device="cpu").epoch(0)]
    meta = BatchStream(12, 4, seed=5, device="meta")  # stands in for a GPU: no values kept
    assert [b.shape for b in meta.epoch(0)] == [torch.Size([4])] * 3
    assert drawn == [("cpu", None), ("cpu", None)]
    assert sorted(i for batch in cpu for i in batch) == list(range(12))


class _RunsCode:
    """A pickle that would run code when loaded (what a crafted last.pt could hold)."""

    def __reduce__(self):
        return (Path.touch, (Path(_MARKER["path"]),))


_MARKER: dict[str, str] = {}


def test_checkpoint_that_would_run_code_is_refused_not_executed(tmp_path) -> None:
    marker = tmp_path / "pwned"
    _MARKER["path"] = str(marker)
    path = tmp_path / "last.pt"
    torch.save({"format": "selfsup-checkpoint-v1", "model": {}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["vicreg", "moco", "dino"])
def test_a_training_step_builds_no_tensor_from_python_values(name, tmp_path) -> None:
    """Inside a step (views, forward, backward, optimizer, hooks, the loop's bookkeeping) no
    tensor is made from Python values (``torch.tensor`` / ``as_tensor``: on a GPU each is a
    host-to-device copy): constants are built once per run, the shuffle is made where the
    images live. Counted from the end of step 1 to the end of step 2 (step 1 may build state)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    extra = {"vicreg": [], "moco": ["method.queue_size=64"], "dino": ["method.local_crops=2"]}
    tiny = [o for o in TINY if not o.startswith("method.")] if name != "vicreg" else TINY
    cfg = resolve(
        load_config(None, [*tiny, f"method.name={name}", "train.epochs=1", *extra[name]]),
        seeded_subset(load_dataset("synthetic", "train", image_size=16), 128, 0),
    )
    data = seeded_subset(load_dataset("synthetic", "train", image_size=16), 128, 0)
    method = make_method(cfg, data.channels)
    window, made = {"on": False}, []
    real_end = method.on_step_end

    def on_step_end(step: int, total: int) -> None:
        real_end(step, total)
        window["on"] = step == 0  # from the end of step 1 (index 0) to the end of step 2

    method.on_step_end = on_step_end

    class Creations(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if window["on"] and func is torch.ops.aten.lift_fresh.default:
                made.append(func)
            return func(*args, **(kwargs or {}))

    with Creations():
        train_run(method, data.images, cfg, tmp_path)
    assert made == [], f"{len(made)} tensors made from Python values inside one step"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_training_step_never_synchronises_with_the_host(tmp_path) -> None:
    """Under ``torch.cuda.set_sync_debug_mode("error")`` any operation that waits for the GPU
    (``.item()``, a host copy, a data-dependent shape) raises; steps between metric flushes
    must run without one."""
    cfg, data = setup(["train.device=cuda", "train.log_every=1000", "train.epochs=1"])
    method = make_method(cfg, data.channels)
    real_end = method.on_step_end

    def on_step_end(step: int, total: int) -> None:
        real_end(step, total)
        torch.cuda.set_sync_debug_mode("error" if step == 0 else 0)

    method.on_step_end = on_step_end
    try:
        train_run(method, data.images, cfg, tmp_path)
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_monitor_at_time_marks_runs_mid_epoch_and_is_not_training_time(tmp_path) -> None:
    """eval.monitor_minutes: the monitor runs once the training time passes each mark, in the
    middle of an epoch, with its own time left out of train_seconds; marks a resumed run has
    passed are not run again."""
    import time

    cfg, data = setup(["train.epochs=2", "train.log_every=1"])
    seen: list[tuple[float, bool]] = []

    def monitor(backbone, epoch, *, mid_epoch=False):
        seen.append((epoch, mid_epoch))
        time.sleep(0.3)  # a slow monitor: its time must not count as training
        return {"monitor_probe": float(len(seen))}

    t0 = time.perf_counter()
    train_run(
        make_method(cfg, data.channels),
        data.images,
        cfg,
        tmp_path,
        monitor=monitor,
        monitor_every=1,
        monitor_seconds=[1e-9, 2e-9, 3600.0],
    )
    wall = time.perf_counter() - t0
    mid = [r for r in records(tmp_path) if "epoch_fraction" in r]
    # both tiny marks are passed after the first step: one record, mid-epoch 0, not "epoch"
    assert len(mid) == 1 and "epoch" not in mid[0]
    assert mid[0]["step"] == 1 and mid[0]["epoch_fraction"] == 0.25
    assert seen[0] == (0.25, True) and [s for s in seen[1:]] == [(1, False), (2, False)]
    ends = [r for r in records(tmp_path) if "epoch" in r and "monitor_probe" in r]
    assert [r["epoch"] for r in ends] == [1, 2]
    # three monitor calls slept 0.9 s in all: none of it is training time
    assert ends[-1]["train_seconds"] < wall - 0.85
    assert mid[0]["train_seconds"] <= ends[0]["train_seconds"]

    # a resumed run skips the marks its checkpoint already passed
    seen.clear()
    cfg3 = load_config(None, [*TINY, "train.epochs=3", "train.log_every=1"])
    cfg3 = resolve(cfg3, data)
    train_run(
        make_method(cfg3, data.channels),
        data.images,
        cfg3,
        tmp_path,
        resume=True,
        monitor=monitor,
        monitor_every=1,
        monitor_seconds=[1e-9],
    )
    assert seen == [(3, False)]


def test_monitor_minutes_from_the_config_logs_a_mid_epoch_knn(tmp_path) -> None:
    """The user's way in: eval.monitor_minutes alone (monitor_every=0) logs the kNN monitor
    mid-epoch, and the per-epoch curves are not disturbed by it."""
    from selfsup.analysis.curves import epoch_series
    from selfsup.pipeline import pretrain

    overrides = ["eval.protocols=[]", "eval.monitor_every=0", "eval.monitor_minutes=[1e-9]"]
    overrides += ["eval.monitor_limit=64", "train.log_every=1"]
    cfg = load_config(None, [*TINY, *overrides])
    pretrain(cfg, tmp_path / "run")
    recs = records(tmp_path / "run")
    mid = [r for r in recs if "monitor_knn_top1" in r]
    assert len(mid) == 1 and 0 < mid[0]["epoch_fraction"] < 1
    assert epoch_series(recs, "monitor_knn_top1") == ([], [])


def test_features_that_are_not_finite_stop_the_run_with_advice_not_a_linalg_traceback() -> None:
    """Issue #25.3: exported weights with a short warm-up reached a loss of 3.4e19 and the
    collapse monitor died in torch.linalg.svd with a raw LinAlgError."""
    from selfsup.run.callbacks import knn_monitor

    cfg, data = setup(["eval.monitor_limit=64"])
    monitor = knn_monitor(cfg, data, torch.device("cpu"))

    class Exploded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return self.conv(x).mean((2, 3)) * 0 + float("inf")

    with pytest.raises(TrainingDiverged, match=r"epoch 3: .*NaN / inf.*train.lr"):
        monitor(Exploded(), 3)


def test_an_error_inside_the_loop_closes_the_progress_bar_first(tmp_path, monkeypatch) -> None:
    """Issue #25.3: an error was printed glued to the end of the bar's line."""
    from selfsup.errors import DataError

    events: list[str] = []

    class Bar:
        def update(self, n=1):
            events.append("update")

        def set_postfix(self, refresh=True, **values):
            pass

        def write(self, text):
            events.append("write")

        def close(self):
            events.append("close")

    monkeypatch.setattr(loop, "progress", lambda *a, **k: Bar())
    real = loop.make_views

    def failing(*args, **kwargs):
        if events.count("update") == 2:
            raise DataError("a corrupt batch")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "make_views", failing)
    cfg, data = setup()
    with pytest.raises(DataError):
        train_run(make_method(cfg, data.channels), data.images, cfg, tmp_path)
    assert events[-1] == "close"
