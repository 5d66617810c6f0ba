"""TensorBoard event files beside ``metrics.jsonl`` (``train.tensorboard=true``): the same
records, as scalars under ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs/``), and the
saved embeddings (``viz.embed_epochs``) in TensorBoard's projector. Optional: it needs the
``tensorboard`` package (``pip install 'selfsup[tensorboard]'``); ``metrics.jsonl`` stays the
record of the run, this is a view of it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from selfsup.errors import ConfigError
from selfsup.layout import RunDir


def _writer_class() -> Any:
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.tensorboard=true needs the tensorboard package: pip install "
            "'selfsup[tensorboard]' (or tensorboard), or set train.tensorboard=false"
        )
    from torch.utils.tensorboard import SummaryWriter  # needs tensorboard, checked above

    return SummaryWriter


class TensorBoardLog:
    """Scalars of metric records: a step record's values (``loss`` and its parts, ``lr``,
    ``images_per_s``) under ``train/``, monitors (``monitor_*``) under ``monitor/``, other
    epoch records (held-out curves) under ``epoch/``; x = the record's ``step``."""

    def __init__(self, run_dir: Path) -> None:
        self.writer = _writer_class()(log_dir=str(RunDir(run_dir).tensorboard))

    def write(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            step = rec.get("step")
            if step is None:
                continue
            for key, value in rec.items():
                if key in ("step", "epoch", "epoch_fraction") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(_tag(key, rec), float(value), int(step))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _tag(key: str, rec: dict[str, Any]) -> str:
    if key.startswith("monitor_"):
        return f"monitor/{key.removeprefix('monitor_')}"
    return f"{'train' if 'loss' in rec else 'epoch'}/{key}"


def add_embedding(run_dir: Path, feats: Any, labels: list[str], epoch: int) -> None:
    """One projector entry (features and their class names) for ``epoch``."""
    writer = _writer_class()(log_dir=str(RunDir(run_dir).tensorboard))
    writer.add_embedding(feats, metadata=labels, global_step=epoch, tag="backbone")
    writer.close()
