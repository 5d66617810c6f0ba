"""One rank of a supervised run with dropout, launched by tests/test_torchrun.py under torchrun.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/torchrun_worker.py OUT
MODE``: each rank trains the tiny Classifier (``backbone.dropout=0.5``) on the CPU through
:func:`selfsup.pipeline.train_run` (DDP over gloo), saving the dropout masks it drew in its
first steps to ``OUT/masks-rank<R>.pt``. ``MODE``: ``full`` trains 2 epochs with a monitor at
a training-time mark (rank 0 alone holds the marks); ``cut`` is stopped by a KeyboardInterrupt
on both ranks at the third step of the second epoch, after a mid-epoch checkpoint
(``train.checkpoint_every=2``); ``resume`` continues that checkpoint."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

from selfsup.config import load_config
from selfsup.data.array import seeded_subset
from selfsup.data.sources import load_dataset
from selfsup.distributed import init_from_env, rank, shutdown
from selfsup.pipeline import resolve, train_run, training_labels
from selfsup.rundir import make_method
from selfsup.train import loop
from tiny import TINY

SETTINGS = [
    *(o for o in TINY if not o.startswith("method.")),
    "method.name=supervised",
    "backbone.dropout=0.5",
    "train.device=cpu",
    "train.precision=fp32",
    "train.optimizer=sgd",
    "train.lr=0.5",
    "train.checkpoint_every=2",
]


def record_masks(method: torch.nn.Module, masks: list[torch.Tensor], steps: int) -> None:
    """Keep the dropout keep-masks (where the input was not 0) of the first ``steps`` calls."""

    def hook(_module, inputs, output) -> None:
        if len(masks) < steps:
            x = inputs[0]
            masks.append(torch.where(x != 0, (output != 0).float(), torch.nan))

    method.dropout.register_forward_hook(hook)


def interrupt_at(call: int) -> None:
    """A KeyboardInterrupt on every rank at the ``call``-th view batch (a step boundary)."""
    real, calls = loop.make_views, {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    loop.make_views = interrupting


def main(out: Path, mode: str) -> None:
    init_from_env("cpu")
    torch.set_num_threads(1)
    data = seeded_subset(load_dataset("synthetic", "train", image_size=16), 128, 0)
    cfg = resolve(load_config(None, SETTINGS), data)
    data, labels = training_labels(cfg, data)
    method = make_method(cfg, data.channels)
    masks: list[torch.Tensor] = []
    record_masks(method, masks, steps=2)
    hooks: dict = {}
    if mode == "full":
        hooks = {"monitor": lambda backbone, epoch, mid_epoch=False: {"probe": 1.0}}
        hooks["monitor_seconds"] = [1e-6]
    if mode == "cut":
        interrupt_at(7)  # steps 0-3 are epoch 0; the checkpoint at step 6 is mid-epoch 1
    with contextlib.suppress(KeyboardInterrupt):  # mode "cut": both ranks stop there
        train_run(method, data.images, cfg, out, resume=mode == "resume", labels=labels, **hooks)
    torch.save(masks, out / f"masks-rank{rank()}.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
