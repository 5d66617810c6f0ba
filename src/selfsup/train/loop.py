"""One training loop for every method: :class:`Trainer`, and :func:`fit`, which runs one.

Top to bottom, each step: take a shuffled index batch of the uint8 images (resident on the
device, or read ahead from the host by :class:`~selfsup.train.reader.Batches`), make the
method's views on the device, run the method under autocast, step the optimizer with the
scheduled learning rate, let the method update its teacher / queue / centre. Every ``log_every``
steps the buffered per-step losses are copied to the host once (one sync), checked for
non-finite values, and appended to ``metrics.jsonl`` (:mod:`selfsup.train.metrics`). Each epoch
ends with an atomic ``checkpoints/last.pt`` from which ``resume`` continues exactly (the
shuffling and the views of epoch e are seeded by (seed, epoch) alone, the same on every rank, so
they do not depend on what ran before, and N processes draw what one process would; dropout is
seeded by (seed, step, rank): :mod:`selfsup.train.rng`). Where the
run stands is one :class:`~selfsup.train.state.TrainState`; what stops it is in
:mod:`selfsup.train.guards`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from selfsup.atomic import remove_temporaries
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
from selfsup.errors import ConfigError
from selfsup.layout import RunDir
from selfsup.methods.base import Method
from selfsup.parts.schedules import warmup_cosine, warmup_steps
from selfsup.precision import amp_dtype, autocast_for, resolve_device
from selfsup.progress import progress
from selfsup.train.config import TrainConfig
from selfsup.train.guards import (
    ADVICE,
    StopSignals,
    TrainingDiverged,
    TrainingStopped,
    check_starting_weights,
    check_weights,
    restore_buffers,
    snapshot_buffers,
)
from selfsup.train.metrics import MetricsLog, Pending, flush, log_skipped
from selfsup.train.optim import build_optimizer, model_footprint
from selfsup.train.reader import Batches, free_device_memory
from selfsup.train.rng import restore_generator, seed_step, view_seed
from selfsup.train.state import TrainState, check_compatible

__all__ = [
    "ADVICE",
    "BatchStream",
    "Monitor",
    "Trainer",
    "TrainingDiverged",
    "TrainingStopped",
    "check_compatible",
    "fit",
    "images_on_device",
    "place_images",
    "resolve_device",
]

Monitor = Callable[..., dict[str, float]]  # (backbone, epoch, *, mid_epoch=False) -> scores


def images_on_device(images: torch.Tensor, device: torch.device, on_device: str, room: int) -> bool:
    """Whether the training images go to the GPU ``device`` (``data.on_device``): ``always``,
    ``never``, or ``auto``: when they take at most half of the free memory (PyTorch's cached
    blocks counted as free) left once ``room`` bytes are set aside for the model (its weights,
    gradients and optimizer state: :func:`~selfsup.train.optim.model_footprint`); the other
    half is for the activations. A CPU run leaves them where they are."""
    if device.type != "cuda" or on_device == "never":
        return False
    if on_device == "always":
        return True
    free = free_device_memory(device) - room
    return images.numel() * images.element_size() <= free // 2


def place_images(
    images: torch.Tensor, device: torch.device, *, on_device: str = "auto", room: int = 0
) -> torch.Tensor:
    """The uint8 images on ``device`` when :func:`images_on_device` says so; otherwise on the
    host, where :class:`~selfsup.train.reader.Batches` gathers each batch into a reusable
    pinned buffer (pinning the whole array would copy it all into locked RAM: impossible for a
    memmap bigger than memory)."""
    if images_on_device(images, device, on_device, room):
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


def _weight_decay(tc: TrainConfig, step: int, total: int) -> float:
    """``train.weight_decay``, or its cosine schedule to ``train.weight_decay_end`` (DINO's
    ``wd_schedule`` in facebookresearch/dino main_dino.py)."""
    if tc.weight_decay_end is None:
        return tc.weight_decay
    return warmup_cosine(
        step, total, base=tc.weight_decay, warmup_steps=0, final=tc.weight_decay_end
    )


class _Epoch:
    """One epoch's moving parts: its view generator, its index batches, where it started (the
    batches a mid-epoch checkpoint had done) and when (its training time, monitors excluded)."""

    def __init__(self, epoch: int, view_gen: torch.Generator, batches: list, first: int) -> None:
        self.epoch, self.view_gen, self.batches, self.first = epoch, view_gen, batches, first
        self.started = time.perf_counter()


class Trainer:
    """The one loop, as a small object: ``__init__`` sets up (device, images, batches,
    optimizer and schedules), :meth:`resume` loads a checkpoint into :attr:`state`,
    :meth:`run` trains epoch by epoch (:meth:`step`, :meth:`flush`, :meth:`save`, the
    monitors). See :func:`fit` for the arguments."""

    def __init__(
        self,
        method: Method,
        images: torch.Tensor,
        train: TrainConfig,
        run_dir: Path,
        *,
        seed: int,
        identity: dict[str, Any],
        compile_views: bool = False,
        monitor: Monitor | None = None,
        monitor_every: int = 0,
        monitor_seconds: Sequence[float] = (),
        labels: torch.Tensor | None = None,
        label: str = "train",
        on_device: str = "auto",
    ) -> None:
        self.method, self.tc, self.seed, self.identity = method, train, seed, identity
        self.compile_views, self.label, self.run_dir = compile_views, label, run_dir
        self.monitor, self.monitor_every, self.monitor_seconds = (
            monitor,
            monitor_every,
            monitor_seconds,
        )
        self.main = rank() == 0
        self.rd = RunDir(run_dir)
        self.device = resolve_device(train.device)
        dtype = amp_dtype(train.precision, self.device)
        self.autocast = autocast_for(self.device, dtype)
        # fp16 scales the loss so that small gradients do not flush to zero, and skips a step
        # whose gradients overflowed (halving the scale); disabled, each call is a no-op
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=dtype is torch.float16)
        self._place(images, labels, on_device)
        self._schedule()
        self.log = MetricsLog(self.rd.metrics, enabled=self.main, tensorboard=train.tensorboard)
        self.state = TrainState()
        self.resumed = False
        self.pending = Pending.empty()

    def _place(self, images: torch.Tensor, labels: torch.Tensor | None, on_device: str) -> None:
        """The images (where ``data.on_device`` puts them; measured before the method is on
        the device, whose footprint is set aside) and the method on the training device."""
        if self.main:
            self.rd.checkpoints.mkdir(parents=True, exist_ok=True)
        room = model_footprint(self.method, self.tc.optimizer)
        self.images = place_images(images, self.device, on_device=on_device, room=room)
        self.method.to(self.device)
        # both ways: a copied backbone (an evaluation's) may arrive in the other layout
        layout = torch.channels_last if self.tc.channels_last else torch.contiguous_format
        self.method.to(memory_format=layout)
        self.labels = None if labels is None else labels.to(self.images.device)
        self.stream = BatchStream(
            len(self.images),
            self.tc.batch_size,
            self.seed,
            rank=rank(),
            world=world_size(),
            device=self.images.device,
        )

    def _schedule(self) -> None:
        """The optimizer, the lr warm-up + cosine and which groups take weight decay."""
        tc = self.tc
        self.total = tc.epochs * self.stream.steps_per_epoch
        per_epoch = self.stream.steps_per_epoch
        self.warmup = warmup_steps(tc.warmup_epochs, per_epoch, self.total, tc.warmup_min_steps)
        self.base_lr = tc.lr * tc.batch_size / 256
        groups = self.method.param_groups(tc.weight_decay)
        self.decays = [not g["exclude"] for g in groups]  # the groups the wd schedule sets
        # a group may carry its own lr multiple (a fine-tuned head: eval.finetune.head_lr_scale)
        self.lr_scales = [
            g.get("lr_scale", 1.0) * (1.0 if d else tc.bias_lr_scale)
            for g, d in zip(groups, self.decays, strict=True)
        ]
        self.optimizer = build_optimizer(groups, tc, self.base_lr)

    def resume(self) -> None:
        """Continue from ``checkpoints/last.pt``: weights, optimizer, grad scaler and
        :attr:`state` (the global RNG is seeded per step: :mod:`selfsup.train.rng`);
        metric records past its step are dropped, temporaries of an interrupted write removed."""
        path = self.rd.checkpoint
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, self.identity, path)
        self.method.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):  # (none before fp16 existed, nor from a bf16 / fp32 run)
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState.from_checkpoint(ckpt)
        self.resumed = True
        self.log.truncate_after(self.state.step)
        remove_temporaries(path.parent, path.name)

    def save(self, epoch: int, epoch_step: int, view_gen: torch.Generator | None) -> None:
        """``epoch`` is the one to continue from, ``epoch_step`` the batches of it done; never
        weights holding NaN / inf (the run stops instead, its last good checkpoint kept)."""
        s = self.state
        check_weights(self.method, s.step, epoch, self.rd.checkpoint)
        if not self.main:
            return
        s.epoch, s.epoch_step = epoch, epoch_step
        s.view_state = None if view_gen is None else view_gen.get_state()
        s.view_device = None if view_gen is None else torch.device(view_gen.device).type
        save_checkpoint(
            self.rd.checkpoint,
            model=self.method.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),  # {} unless fp16
            **s.checkpoint_fields(),
            config=self.identity,
        )

    def flush(self, epoch: int) -> None:
        """The buffered step values to the host, checked, into ``metrics.jsonl``."""
        self.pending = flush(self.pending, epoch, self.log, self.bar, self.rd.checkpoint)

    def _model(self) -> nn.Module:
        """What the steps call: the method, wrapped in DDP under torchrun, compiled on ask."""
        method, device = self.method, self.device
        model: nn.Module = method
        if is_distributed():
            ids = [device.index] if device.type == "cuda" else None
            # batch statistics over the global batch, as one process (not with shuffle-BN)
            if device.type == "cuda" and getattr(method, "sync_batchnorm", True):
                nn.SyncBatchNorm.convert_sync_batchnorm(method)  # (replaces BN layers in place)
            # buffers every rank keeps equal itself (queue, DINO centre) skip DDP's broadcast
            DDP._set_params_and_buffers_to_ignore_for_model(method, synced_buffer_names(method))
            model = DDP(method, device_ids=ids)
        return torch.compile(model) if self.tc.compile else model

    def _set_schedules(self) -> float:
        """Set the scheduled lr and weight decay on every group for this step; returns the lr."""
        tc, step = self.tc, self.state.step
        lr = warmup_cosine(
            step,
            self.total,
            base=self.base_lr,
            warmup_steps=self.warmup,
            final=self.base_lr * tc.final_lr_ratio,
        )
        wd = _weight_decay(tc, step, self.total)
        groups = self.optimizer.param_groups
        for group, decayed, scale in zip(groups, self.decays, self.lr_scales, strict=True):
            group["lr"] = lr * scale
            group["weight_decay"] = wd if decayed else 0.0
        return lr

    def _views(self, batch: torch.Tensor, view_gen: torch.Generator) -> list[torch.Tensor]:
        # one generator state on every rank: each draws the global batch's view parameters
        # and keeps its own rows (make_views' shard), so N processes train as one would
        with torch.no_grad():
            views = make_views(
                batch,
                self.method.view_specs,
                view_gen,
                compile=self.compile_views,
                shard=(rank(), world_size()),
            )
        if self.tc.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views

    def step(self, batch: torch.Tensor, idx: torch.Tensor, view_gen: torch.Generator) -> None:
        """One optimizer step on a batch (or, with ``train.skip_nonfinite``, a skipped one)."""
        tc, method, s = self.tc, self.method, self.state
        seed_step(self.seed, s.step, rank())  # dropout: each rank its own, resumable exactly
        views = self._views(batch, view_gen)
        lr = self._set_schedules()
        method.before_step(s.step, self.total, self.stream.steps_per_epoch)
        labels = () if self.labels is None else (self.labels[idx.to(self.labels.device)],)
        labels = tuple(t.to(self.device) for t in labels)
        buffers = snapshot_buffers(method) if tc.skip_nonfinite else {}
        with self.autocast:
            out = self.model(views, *labels)
        self.optimizer.zero_grad(set_to_none=True)
        # every rank skips together (a rank that stepped alone would wait forever)
        if tc.skip_nonfinite and any_rank(not bool(torch.isfinite(out.loss.detach()))):
            restore_buffers(method, buffers)  # the forward's BN statistics too
            s.skipped += 1  # (one host sync per step, only with skip_nonfinite on)
            limit, path = tc.skip_nonfinite, self.rd.checkpoint
            log_skipped(self.log, self.bar, s.step, self.epoch, s.skipped, limit, path)
        else:
            self._update(out.loss)
            method.on_step_end(s.step, self.total)
            self.pending.add(s.step, out.loss, out.parts, lr, len(batch) * world_size())
        s.step += 1
        self.bar.update(1)

    def _update(self, loss: torch.Tensor) -> None:
        """Backward, the method's gradient surgery, the clip and the optimizer step. In fp16
        the loss is scaled for the backward and the gradients unscaled before the clip and the
        optimizer (LARS' trust ratio reads their norm), as the GradScaler docs prescribe; a step
        whose gradients hold an inf / NaN is skipped by the scaler (one host sync a step, the
        scaler's own) and the scale halved."""
        self.scaler.scale(loss).backward()
        self.method.after_backward()
        self.scaler.unscale_(self.optimizer)
        if self.tc.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.method.parameters(), self.tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _stopped(self, where: str) -> TrainingStopped:
        barrier()  # rank 0 has written the checkpoint the message names
        return TrainingStopped(
            f"stopped by {self.stop.name} at {where}; checkpoint written to "
            f"{self.rd.checkpoint}. Continue with: selfsup pretrain --out {self.run_dir} --resume"
        )

    def _after_step(self, ep: _Epoch, done: int) -> None:
        """The flush every ``log_every`` steps, a mid-epoch checkpoint (every
        ``checkpoint_every`` steps, or on a stop signal) and the time-mark monitor."""
        s, n = self.state, len(ep.batches)
        flushed = len(self.pending.steps) >= self.tc.log_every
        if flushed:
            self.flush(ep.epoch)
        periodic = self.tc.checkpoint_every and s.step % self.tc.checkpoint_every == 0
        # under torchrun every rank stops at the same step (decided at a flush, which syncs
        # anyway): a signal to one rank stopped it alone, its message claiming a checkpoint
        # that rank 0 never wrote
        stopping = self.stop.agreed() if flushed or not is_distributed() else False
        if (stopping or periodic) and done < n:
            self.flush(ep.epoch)
            self.save(ep.epoch, done, ep.view_gen)
            if stopping:
                where = f"step {s.step} (epoch {ep.epoch}, batch {done} of {n})"
                raise self._stopped(where)
        self._time_mark(ep, done)

    def _time_mark(self, ep: _Epoch, done: int) -> None:
        """The monitor at a training-time mark, when one is due. Under torchrun rank 0 alone
        holds the marks and runs the monitor, but the flush before it is a collective: the
        ranks decide together every ``log_every`` steps (one sync, as a flush), and only in a
        run with marks; rank 0 deciding alone flushed alone and waited forever for a
        collective the others never joined."""
        s = self.state
        due = self.marks.due(s.train_seconds + time.perf_counter() - ep.started)
        if is_distributed():
            agree = bool(self.monitor_seconds) and s.step % self.tc.log_every == 0
            due = agree and any_rank(due)
        if not due:
            return
        self.flush(ep.epoch)
        if self.main:
            t = time.perf_counter()
            at = {"epoch_fraction": round(ep.epoch + done / len(ep.batches), 4), "step": s.step}
            at["train_seconds"] = s.train_seconds + t - ep.started
            self.log.write([self.marks.run(self.method, at)])
            ep.started += time.perf_counter() - t  # the monitor's time is not training

    def _start_epoch(self, epoch: int, start: TrainState) -> _Epoch:
        view_gen = torch.Generator(device=self.device)
        view_gen.manual_seed(view_seed(self.seed, epoch))
        resumed = epoch == start.epoch
        if resumed and start.view_state is not None:
            fallback = view_seed(self.seed, epoch) + start.step
            other = restore_generator(view_gen, start.view_state, start.view_device, fallback)
            if other is not None and self.main:
                tqdm.write(
                    f"selfsup: the checkpoint was written mid-epoch on {other} and this run "
                    f"trains on {self.device.type}, whose view generator cannot take a {other} "
                    f"generator's state: the views of the rest of epoch {epoch} are reseeded "
                    f"from step {start.step}, so this resume is not bit-exact (deterministic, "
                    "but not the uninterrupted run's views)",
                    file=sys.stderr,
                )
        first = start.epoch_step if resumed else 0
        return _Epoch(epoch, view_gen, list(self.stream.epoch(epoch)), first)

    def _epoch(self, ep: _Epoch, readers: ExitStack) -> None:
        self.epoch, self.pending = ep.epoch, Pending.empty()
        reader = readers.enter_context(Batches(self.images, ep.batches[ep.first :], self.device))
        for i, batch in zip(range(ep.first, len(ep.batches)), reader, strict=True):
            self.step(batch, ep.batches[i], ep.view_gen)
            self._after_step(ep, i + 1)
        self.flush(ep.epoch)
        self.state.train_seconds += time.perf_counter() - ep.started  # monitors excluded

    def _end_epoch(self, epoch: int) -> None:
        """The epoch monitor, the checkpoint, and a stop signal's exit."""
        s, every = self.state, self.monitor_every
        if self.monitor is not None and every and (epoch + 1) % every == 0 and self.main:
            self.method.eval()
            scores = self.monitor(self.method.backbone, epoch + 1)
            at = {"epoch": epoch + 1, "step": s.step, "train_seconds": s.train_seconds}
            self.log.write([{**at, **scores}])
            self.method.train()
        self.save(epoch + 1, 0, None)
        if self.stop.agreed() and epoch + 1 < self.tc.epochs:
            raise self._stopped(f"step {self.state.step} (the end of epoch {epoch + 1})")

    def run(self) -> Method:
        """Train from :attr:`state` to ``train.epochs``; returns the trained method."""
        start = TrainState(**vars(self.state))
        check_starting_weights(self.method, self.rd.checkpoint if self.resumed else self.identity)
        monitor = self.monitor if self.main else None
        self.marks = _TimeMarks(self.monitor_seconds, start.train_seconds, monitor)
        self.model = self._model()
        self.bar = progress(
            self.total, self.label, initial=start.step, enabled=self.main and self.tc.progress
        )
        self.method.train()
        with StopSignals() as self.stop, ExitStack() as readers:
            readers.callback(self.bar.close)  # also on an error: its message on a line of its own
            for epoch in range(start.epoch, self.tc.epochs):
                self._epoch(self._start_epoch(epoch, start), readers)
                self._end_epoch(epoch)
        return self.method


def fit(
    method: Method,
    images: torch.Tensor,
    train: TrainConfig,
    run_dir: Path,
    *,
    seed: int,
    identity: dict[str, Any],
    resume: bool = False,
    **options: Any,
) -> Method:
    """Train ``method`` on uint8 ``images`` (N, C, H, W) with the ``train`` settings and
    ``seed`` (shuffling, views); write metrics and checkpoints to ``run_dir``. Returns the
    trained method (on the training device). ``identity`` says what is being trained (a
    pretraining run's whole config as a dict; a trained evaluation's own description): every
    checkpoint stores it and a resume is refused when it does not match
    (:func:`~selfsup.train.state.check_compatible`).

    ``options`` (:class:`Trainer`): ``compile_views`` (``torch.compile`` the view ops);
    ``on_device`` (``data.on_device``: auto, always, never: where the images live);
    ``labels`` (N,) int64 (-1 = unlabeled), with which the method is called as
    ``method(views, labels_of_the_batch)``: supervised fine-tuning and joint SSL + supervised
    training run through this same loop; ``label``, what is trained, on the progress bar;
    ``monitor``, run on the backbone after every ``monitor_every``-th epoch and, as
    ``monitor(backbone, epoch_fraction, mid_epoch=True)``, once the training time passes each
    of ``monitor_seconds`` (mid-epoch if need be); its time is never counted as training."""
    trainer = Trainer(method, images, train, run_dir, seed=seed, identity=identity, **options)
    if resume:
        trainer.resume()
    return trainer.run()
