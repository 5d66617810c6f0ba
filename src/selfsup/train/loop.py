"""One training loop for every method.

Top to bottom, each step: take a shuffled index batch of the uint8 images (resident on the
device, or read ahead from the host by :class:`~selfsup.train.reader.Batches`), make the
method's views on the device, run the method under autocast, step the optimizer with the
scheduled learning rate, let the method update its teacher / queue / centre. Every ``log_every``
steps the buffered per-step losses are copied to the host once (one sync), checked for
non-finite values, and appended to ``metrics.jsonl``. Each epoch ends with an atomic
``checkpoints/last.pt`` from which ``resume`` continues exactly (the shuffling and the views of
epoch e are seeded by (seed, epoch) alone, the same on every rank, so they do not depend on
what ran before, and N processes draw what one process would).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from selfsup.atomic import remove_temporaries, write_text_atomic
from selfsup.backbones.config import BackboneConfig
from selfsup.checkpoint import load_checkpoint, save_checkpoint
from selfsup.data.views import make_views
from selfsup.distributed import (
    any_rank,
    barrier,
    is_distributed,
    rank,
    synced_buffer_names,
    world_size,
)
from selfsup.errors import CheckpointError, ConfigError, SelfsupError
from selfsup.fields import architecture_keys
from selfsup.layout import RunDir
from selfsup.methods.base import Method
from selfsup.methods.joint import JointConfig
from selfsup.methods.registry import METHODS
from selfsup.parts.schedules import warmup_cosine, warmup_steps
from selfsup.precision import autocast_for, resolve_device, use_bf16
from selfsup.progress import Progress, progress
from selfsup.train.config import TrainConfig
from selfsup.train.heldout import HELD_OUT
from selfsup.train.optim import build_optimizer
from selfsup.train.reader import Batches, free_device_memory

Monitor = Callable[..., dict[str, float]]  # (backbone, epoch, *, mid_epoch=False) -> scores


class TrainingDiverged(SelfsupError):
    """The loss became NaN or infinite."""


def place_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move the uint8 images to ``device`` when they take under half of its free memory
    (PyTorch's cached blocks counted as free); otherwise keep them on the host, where
    :class:`~selfsup.train.reader.Batches` gathers each batch into a reusable pinned buffer
    (pinning the whole array would copy it all into locked RAM: impossible for a memmap bigger
    than memory)."""
    if device.type == "cuda" and images.numel() < free_device_memory(device) // 2:
        return images.to(device)
    return images


class BatchStream:
    """Shuffled index batches, reproducible per (seed, epoch), sharded across processes.

    ``batch_size`` is the global batch: each of ``world`` processes takes every world-th index
    of a global batch. The last incomplete batch is dropped.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world: int = 1,
        device: torch.device | str = "cpu",
    ):
        if batch_size % world:
            raise ConfigError(f"train.batch_size={batch_size} is not divisible by {world} GPUs")
        if n < batch_size:
            raise ConfigError(
                f"train.batch_size={batch_size} is larger than the {n} training images; "
                "lower train.batch_size or raise data.limit"
            )
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.device = torch.device(device)

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        """The epoch's index batches, drawn by a CPU generator on every rank (a CUDA
        generator draws another permutation from the same seed: ranks that placed the images
        differently would have taken overlapping shards) and moved once to ``self.device``,
        where the images live (no host-to-device copy of the indices per step)."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(self.n, generator=g).to(self.device)
        for s in range(self.steps_per_epoch):
            yield perm[s * self.batch_size : (s + 1) * self.batch_size][self.rank :: self.world]


class MetricsLog:
    """Append-only JSON-lines metrics, one record per line (and, with ``tensorboard``, the
    same records as TensorBoard scalars beside them: :mod:`selfsup.tensorboard`)."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled and tensorboard:
            from selfsup.tensorboard import TensorBoardLog  # optional dependency

            self.tb = TensorBoardLog(path.parent)

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.enabled and records:
            with self.path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            if self.tb is not None:
                self.tb.write(records)

    def truncate_after(self, step: int) -> None:
        """Drop the records a checkpoint after ``step`` steps does not cover (left by an
        interrupted epoch) before resuming: a step's record carries its 0-based index, so
        those from ``step`` on go; an epoch's or monitor's record carries the steps done when
        it was written, so those past ``step`` go (the last epoch's monitor record stays)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = []
        for line in self.path.read_text().splitlines():
            rec = json.loads(line) if line.strip() else None
            if rec is None:
                continue
            at = rec.get("step", -1)
            if at < step or (at == step and "loss" not in rec and "skipped" not in rec):
                keep.append(line)
        write_text_atomic(self.path, "".join(line + "\n" for line in keep))


@dataclass
class _Pending:
    """Per-step values kept on the device until the next flush."""

    steps: list[int]
    losses: list[torch.Tensor]
    parts: list[dict[str, torch.Tensor]]
    lrs: list[float]
    started: float
    images: int = 0

    @classmethod
    def empty(cls) -> _Pending:
        return cls([], [], [], [], time.perf_counter())


def _rng_state(device: torch.device) -> dict[str, Any]:
    """The CPU generator, and the training GPU's only: a checkpoint must resume on a machine
    with fewer visible GPUs (``get_rng_state_all`` would store one state per visible GPU)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if device.type == "cuda" and cuda is not None:
        if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per visible GPU
            cuda = cuda[0] if cuda else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


class TrainingStopped(SelfsupError):
    """SIGINT or SIGTERM arrived: a checkpoint was written and the run can be resumed."""


class _StopSignals:
    """Turn SIGINT / SIGTERM (Ctrl-C, a scheduler's preemption) into a flag the loop reads
    after each step, so the run stops at a step boundary with a checkpoint. Installed only in
    the main thread; the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def agreed(self) -> bool:
        """Whether to stop now: this process got a signal or, under torchrun, any rank did
        (a collective every rank must reach at the same step)."""
        return any_rank(self.received is not None)

    @property
    def name(self) -> str:
        """The signal this process got, or the other rank's, as the stop message says."""
        return self.received or "a signal to another rank"

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def fit(
    method: Method,
    images: torch.Tensor,
    train: TrainConfig,
    run_dir: Path,
    *,
    seed: int,
    identity: dict[str, Any],
    compile_views: bool = False,
    resume: bool = False,
    monitor: Monitor | None = None,
    monitor_every: int = 0,
    monitor_seconds: Sequence[float] = (),
    labels: torch.Tensor | None = None,
    label: str = "train",
) -> Method:
    """Train ``method`` on uint8 ``images`` (N, C, H, W) with the ``train`` settings and
    ``seed`` (shuffling, views); write metrics and checkpoints to ``run_dir``. Returns the
    trained method (on the training device). ``identity`` says what is being trained (a
    pretraining run's whole config as a dict; a trained evaluation's own description): every
    checkpoint stores it and a resume is refused when it does not match
    (:func:`check_compatible`). ``compile_views``: ``torch.compile`` the view ops.

    With ``labels`` (N,) int64 (-1 = unlabeled) the method is called as ``method(views,
    labels_of_the_batch)``: supervised fine-tuning and joint SSL + supervised training run
    through this same loop. ``label`` names what is trained on the progress bar.

    ``monitor`` runs on the backbone after every ``monitor_every``-th epoch and, as
    ``monitor(backbone, epoch_fraction, mid_epoch=True)``, once the training time passes each
    of ``monitor_seconds`` (mid-epoch if need be); its time is never counted as training."""
    tc = train
    device = resolve_device(tc.device)
    bf16 = use_bf16(tc.precision, device)
    main = rank() == 0
    rd = RunDir(run_dir)
    if main:
        rd.checkpoints.mkdir(parents=True, exist_ok=True)
    method.to(device)
    if tc.channels_last:
        method.to(memory_format=torch.channels_last)
    images = place_images(images, device)
    if labels is not None:
        labels = labels.to(images.device)
    stream = BatchStream(
        len(images), tc.batch_size, seed, rank=rank(), world=world_size(), device=images.device
    )
    total = tc.epochs * stream.steps_per_epoch
    warmup = warmup_steps(tc.warmup_epochs, stream.steps_per_epoch, total, tc.warmup_min_steps)
    base_lr = tc.lr * tc.batch_size / 256
    groups = method.param_groups(tc.weight_decay)
    decays = [not g["exclude"] for g in groups]  # which groups the weight-decay schedule sets
    # a group may carry its own lr multiple (a fine-tuned head: eval.finetune.head_lr_scale)
    lr_scales = [
        g.get("lr_scale", 1.0) * (1.0 if d else tc.bias_lr_scale)
        for g, d in zip(groups, decays, strict=True)
    ]
    optimizer = build_optimizer(groups, tc, base_lr)
    ckpt_path = rd.checkpoint
    log = MetricsLog(rd.metrics, enabled=main, tensorboard=tc.tensorboard)

    start_epoch, step, train_seconds, skipped = 0, 0, 0.0, 0
    skip, view_state = 0, None  # a mid-epoch checkpoint: batches of its epoch already done
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        check_compatible(ckpt, identity, ckpt_path)
        method.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"], device)
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        skip, view_state = int(ckpt.get("epoch_step", 0)), ckpt.get("view_generator")
        train_seconds = float(ckpt.get("train_seconds", 0.0))
        skipped = int(ckpt.get("skipped_nonfinite", 0))
        log.truncate_after(step)
        remove_temporaries(ckpt_path.parent, ckpt_path.name)
    _check_starting_weights(method, ckpt_path if resume else identity)
    marks = _TimeMarks(monitor_seconds, train_seconds, monitor if main else None)

    def save(epoch: int, epoch_step: int, view_gen: torch.Generator | None) -> None:
        """``epoch`` is the one to continue from, ``epoch_step`` the batches of it done; never
        weights holding NaN / inf (the run stops instead, its last good checkpoint kept)."""
        _check_weights(method, step, epoch, ckpt_path)
        if main:
            save_checkpoint(
                ckpt_path,
                model=method.state_dict(),
                optimizer=optimizer.state_dict(),
                epoch=epoch,
                epoch_step=epoch_step,
                view_generator=None if view_gen is None else view_gen.get_state(),
                step=step,
                train_seconds=train_seconds,
                skipped_nonfinite=skipped,
                rng=_rng_state(device),
                config=identity,
            )

    model: nn.Module = method
    if is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        # batch statistics over the global batch, as one process (not with shuffle-BN)
        if device.type == "cuda" and getattr(method, "sync_batchnorm", True):
            nn.SyncBatchNorm.convert_sync_batchnorm(method)  # (replaces BN layers in place)
        # buffers every rank keeps equal itself (queue, DINO centre) skip DDP's broadcast
        DDP._set_params_and_buffers_to_ignore_for_model(method, synced_buffer_names(method))
        model = DDP(method, device_ids=ids)
    if tc.compile:
        model = torch.compile(model)
    autocast = autocast_for(device, bf16)
    shard = (rank(), world_size())
    bar = progress(total, label, initial=step, enabled=main and tc.progress)
    method.train()
    with _StopSignals() as stop, ExitStack() as readers:
        readers.callback(bar.close)  # also on an error: its message starts on a line of its own
        for epoch in range(start_epoch, tc.epochs):
            # one generator state on every rank: each draws the global batch's view parameters
            # and keeps its own rows (make_views' shard), so N processes train as one would
            view_gen = torch.Generator(device=device).manual_seed((seed * 100_003 + epoch) * 1_009)
            if epoch == start_epoch and view_state is not None:
                view_gen.set_state(view_state)
            epoch_start = time.perf_counter()
            pending = _Pending.empty()
            batches = list(stream.epoch(epoch))
            first = skip if epoch == start_epoch else 0
            reader = readers.enter_context(Batches(images, batches[first:], device))
            for i, batch in zip(range(first, len(batches)), reader, strict=True):
                idx = batches[i]
                with torch.no_grad():
                    views = make_views(
                        batch, method.view_specs, view_gen, compile=compile_views, shard=shard
                    )
                if tc.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                lr = warmup_cosine(
                    step,
                    total,
                    base=base_lr,
                    warmup_steps=warmup,
                    final=base_lr * tc.final_lr_ratio,
                )
                wd = _weight_decay(tc, step, total)
                for group, decayed, scale in zip(
                    optimizer.param_groups, decays, lr_scales, strict=True
                ):
                    group["lr"] = lr * scale
                    group["weight_decay"] = wd if decayed else 0.0
                method.before_step(step, total, stream.steps_per_epoch)
                batch_labels = () if labels is None else (labels[idx.to(labels.device)].to(device),)
                buffers = _snapshot_buffers(method) if tc.skip_nonfinite else {}
                with autocast:
                    out = model(views, *batch_labels)
                optimizer.zero_grad(set_to_none=True)
                # every rank skips together (a rank that stepped alone would wait forever)
                if tc.skip_nonfinite and any_rank(not bool(torch.isfinite(out.loss.detach()))):
                    _restore_buffers(method, buffers)  # the forward's BN statistics too
                    skipped += 1  # (one host sync per step, only with skip_nonfinite on)
                    _log_skipped(log, bar, step, epoch, skipped, tc.skip_nonfinite, ckpt_path)
                else:
                    out.loss.backward()
                    method.after_backward()
                    if tc.grad_clip is not None:
                        nn.utils.clip_grad_norm_(method.parameters(), tc.grad_clip)
                    optimizer.step()
                    method.on_step_end(step, total)
                    pending.steps.append(step)
                    pending.losses.append(out.loss.detach())
                    pending.parts.append(out.parts)
                    pending.lrs.append(lr)
                    pending.images += len(batch) * world_size()
                step += 1
                bar.update(1)
                flushed = len(pending.steps) >= tc.log_every
                if flushed:
                    pending = _flush(pending, epoch, log, bar, ckpt_path)
                done = i + 1
                periodic = tc.checkpoint_every and step % tc.checkpoint_every == 0
                # under torchrun every rank stops at the same step (decided at a flush, which
                # syncs anyway): a signal to one rank stopped it alone, its message claiming a
                # checkpoint that rank 0 never wrote
                stopping = stop.agreed() if flushed or not is_distributed() else False
                if (stopping or periodic) and done < len(batches):
                    pending = _flush(pending, epoch, log, bar, ckpt_path)
                    save(epoch, done, view_gen)
                    if stopping:
                        barrier()  # rank 0 has written the checkpoint the message names
                        bar.close()
                        raise TrainingStopped(
                            f"stopped by {stop.name} at step {step} (epoch {epoch}, batch "
                            f"{done} of {len(batches)}); checkpoint written to {ckpt_path}. "
                            f"Continue with: selfsup pretrain --out {run_dir} --resume"
                        )
                if marks.due(train_seconds + time.perf_counter() - epoch_start):
                    pending = _flush(pending, epoch, log, bar, ckpt_path)
                    t = time.perf_counter()
                    at = {"epoch_fraction": round(epoch + done / len(batches), 4), "step": step}
                    log.write(
                        [
                            marks.run(
                                method, {**at, "train_seconds": train_seconds + t - epoch_start}
                            )
                        ]
                    )
                    epoch_start += time.perf_counter() - t  # the monitor's time is not training
            _flush(pending, epoch, log, bar, ckpt_path)
            train_seconds += time.perf_counter() - epoch_start  # training time, monitor excluded
            if monitor is not None and monitor_every and (epoch + 1) % monitor_every == 0 and main:
                method.eval()
                scores = monitor(method.backbone, epoch + 1)
                at = {"epoch": epoch + 1, "step": step, "train_seconds": train_seconds}
                log.write([{**at, **scores}])
                method.train()
            save(epoch + 1, 0, None)
            if stop.agreed() and epoch + 1 < tc.epochs:
                barrier()
                bar.close()
                raise TrainingStopped(
                    f"stopped by {stop.name} at the end of epoch {epoch + 1}; checkpoint "
                    f"written to {ckpt_path}. Continue with: selfsup pretrain --out {run_dir} "
                    "--resume"
                )
    bar.close()
    return method


class _TimeMarks:
    """The monitor at training-time marks (``eval.monitor_minutes``): which marks are still
    ahead (a resumed run skips those it passed) and one mid-epoch record when one is due."""

    def __init__(self, seconds: Sequence[float], done: float, monitor: Monitor | None) -> None:
        self.monitor = monitor
        self.ahead = sorted(s for s in seconds if s > done) if monitor is not None else []

    def due(self, elapsed: float) -> bool:
        return bool(self.ahead) and elapsed >= self.ahead[0]

    def run(self, method: Method, at: dict[str, Any]) -> dict[str, Any]:
        """``at`` (epoch_fraction, step, train_seconds) with the monitor's scores."""
        assert self.monitor is not None
        while self.ahead and self.ahead[0] <= at["train_seconds"]:
            self.ahead.pop(0)
        method.eval()
        try:
            scores = self.monitor(method.backbone, at["epoch_fraction"], mid_epoch=True)
        finally:
            method.train()
        return {**at, **scores}


def _log_skipped(
    log: MetricsLog, bar: Progress, step: int, epoch: int, skipped: int, limit: int, ckpt_path: Path
) -> None:
    """A step whose loss was NaN / inf was skipped (no backward, no update): log it, warn, and
    stop once more than ``train.skip_nonfinite`` steps were skipped."""
    if skipped > limit:
        raise TrainingDiverged(
            f"{skipped} steps had a non-finite loss (train.skip_nonfinite={limit}), the last at "
            f"step {step} (epoch {epoch}); {_kept(ckpt_path)}. {ADVICE}"
        )
    log.write(
        [{"step": step, "epoch": epoch, "skipped": "non-finite loss", "skipped_total": skipped}]
    )
    bar.write(f"selfsup: step {step}: non-finite loss, step skipped ({skipped} of {limit} allowed)")


def _snapshot_buffers(method: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the buffers a forward pass may change (BatchNorm running statistics, ...): a
    skipped step must leave no trace, and a NaN batch would make them NaN for good. Buffers
    kept by collectives in ``on_step_end`` (queue, centre), which a skipped step does not
    reach, are not copied."""
    synced = set(synced_buffer_names(method))
    return {k: b.detach().clone() for k, b in method.named_buffers() if k not in synced}


def _restore_buffers(method: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    buffers = dict(method.named_buffers())
    with torch.no_grad():
        for name, value in saved.items():
            buffers[name].copy_(value)


ADVICE = "Lower train.lr, set train.grad_clip (e.g. 1.0) or use train.precision=fp32."


def _kept(ckpt_path: Path) -> str:
    """What a diverged run keeps: every checkpoint written holds finite weights
    (:func:`_check_weights`), so the one there, if any, is good."""
    if ckpt_path.exists():
        return f"the last good checkpoint is {ckpt_path}"
    return "no checkpoint was written yet (train.checkpoint_every=0: only at epoch ends)"


def _nonfinite_tensors(method: nn.Module) -> tuple[list[str], int]:
    """The names of ``method``'s floating-point state tensors holding NaN or inf (one host
    sync), and how many floating-point tensors it has."""
    state = {k: t for k, t in method.state_dict().items() if t.is_floating_point()}
    if not state:
        return [], 0
    finite = torch.stack([torch.isfinite(t).all() for t in state.values()]).tolist()
    return [k for k, ok in zip(state, finite, strict=True) if not ok], len(state)


def _check_weights(method: nn.Module, step: int, epoch: int, ckpt_path: Path) -> None:
    """Stop before a checkpoint of weights holding NaN / inf replaces a good one (a finite
    loss can still step to inf weights; later steps are then skipped with skip_nonfinite)."""
    bad, total = _nonfinite_tensors(method)
    if any_rank(bool(bad)):
        raise TrainingDiverged(
            f"the model's weights hold NaN / inf at step {step} (epoch {epoch}): {len(bad)} of "
            f"{total} tensors, e.g. {', '.join(bad[:3]) or 'on another process'}; not saved, "
            f"{_kept(ckpt_path)}. {ADVICE}"
        )


def _check_starting_weights(method: nn.Module, source: Path | dict[str, Any]) -> None:
    """Refuse to train from weights that already hold NaN / inf (a ``backbone.weights`` file,
    the checkpoint resumed from): no learning rate would help. ``source``: the checkpoint
    path, or the identity (config) naming the weights file."""
    bad, total = _nonfinite_tensors(method)
    if not bad:
        return
    if isinstance(source, Path):
        where = f"the checkpoint {source}"
    else:
        weights = (source.get("backbone") or {}).get("weights")
        where = f"backbone.weights={weights}" if weights else "the initialisation"
    raise CheckpointError(
        f"the starting weights hold NaN / inf before any training step: {len(bad)} of {total} "
        f"tensors, e.g. {', '.join(bad[:3])}, from {where}. Use weights with finite values "
        "(or none: random init)"
    )


def _weight_decay(tc: TrainConfig, step: int, total: int) -> float:
    """``train.weight_decay``, or its cosine schedule to ``train.weight_decay_end`` (DINO's
    ``wd_schedule`` in facebookresearch/dino main_dino.py)."""
    if tc.weight_decay_end is None:
        return tc.weight_decay
    return warmup_cosine(
        step, total, base=tc.weight_decay, warmup_steps=0, final=tc.weight_decay_end
    )


def _flush(
    pending: _Pending, epoch: int, log: MetricsLog, bar: Progress, ckpt_path: Path
) -> _Pending:
    """Copy the buffered per-step values to the host once, check them, and log them; returns
    an empty buffer for the steps that follow."""
    if not pending.steps:
        return _Pending.empty()
    names = list(pending.parts[0])
    stacked = torch.stack(
        [
            torch.stack([loss, *(p[n].float().to(loss.device) for n in names)])
            for loss, p in zip(pending.losses, pending.parts, strict=True)
        ]
    ).tolist()
    elapsed = max(time.perf_counter() - pending.started, 1e-9)
    ips = pending.images / elapsed
    finite = [all(v == v and abs(v) != float("inf") for v in values) for values in stacked]
    if any_rank(not all(finite)) and all(finite):  # another rank diverged: stop with it
        raise TrainingDiverged(
            f"the loss became non-finite on another process by step {pending.steps[-1]} (epoch "
            f"{epoch}); see its message. Lower train.lr, set train.grad_clip (e.g. 1.0) or use "
            "train.precision=fp32."
        )
    records = []
    for s, lr, values, ok in zip(pending.steps, pending.lrs, stacked, finite, strict=True):
        if not ok:
            raise TrainingDiverged(
                f"the loss became non-finite ({values[0]}) at step {s} (epoch {epoch}); "
                f"{_kept(ckpt_path)}. {ADVICE}"
            )
        rec = {"step": s, "epoch": epoch, "loss": values[0], "lr": lr, "images_per_s": ips}
        rec.update(dict(zip(names, values[1:], strict=True)))
        records.append(rec)
    log.write(records)
    bar.set_postfix(loss=f"{stacked[-1][0]:.4f}", ips=f"{ips:.0f}", refresh=False)
    return _Pending.empty()


def architecture(identity: dict[str, Any]) -> list[tuple[str, str]]:
    """The (section, key) pairs a resume must keep: those the backbone's, joint training's and
    the method's config declare ``arch=True`` (the method's from its registration), and the
    held-out carve, which decides the training images (:data:`~selfsup.train.heldout.HELD_OUT`)."""
    keys = [("backbone", key) for key in architecture_keys(BackboneConfig)]
    keys += [("joint", key) for key in architecture_keys(JointConfig)]
    keys.append(HELD_OUT)
    name = (identity.get("method") or {}).get("name")
    if isinstance(name, str) and name in METHODS:  # not a trained evaluation's classifier
        keys += [("method", key) for key in METHODS.get(name).architecture()]
    return keys


def check_compatible(ckpt: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume from a checkpoint of a different method, backbone or architecture (a
    clear error, not a state_dict size mismatch): the checkpoint's stored identity (a config
    as a dict) against ``identity``. An architecture key (:func:`architecture`) the checkpoint
    lacks (an older checkpoint) or the method does not have is not compared."""
    saved = ckpt.get("config", {})
    names = [("method", "name"), ("backbone", "name"), ("data", "dataset")]
    arch = architecture(identity)
    for section, key in names + arch:
        old, new = saved.get(section, {}), identity.get(section, {})
        if (section, key) in arch and not (key in old and key in new):
            continue
        a, b = old.get(key), new.get(key)
        if a != b:
            raise CheckpointError(
                f"{path} was written with {section}.{key}={a!r} but this run has {b!r}; "
                "resume with the run's own config.yaml, start a new --out directory, or "
                "replace this run with --overwrite instead of --resume"
            )
