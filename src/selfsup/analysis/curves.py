"""Per-epoch curves of runs, read back from their ``metrics.jsonl``.

Epoch records are the lines without a per-step ``loss``: the online monitor's, and the held-out
curves of ``eval.val_images`` (:mod:`selfsup.train.heldout`): ``train_loss``, ``train_top1``,
``val_loss``, ``val_top1`` (classifiers) and ``val_ssl_loss`` (SSL methods).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError
from selfsup.layout import RunDir

CURVE_KEYS = ("train_loss", "val_loss", "train_top1", "val_top1", "val_ssl_loss")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` in order; a clear error when there is none."""
    path = RunDir(run_dir).metrics
    if not path.is_file():
        raise SelfsupError(
            f"{run_dir} has no metrics.jsonl: give the directory of a run (or of a trained "
            "evaluation under RUN_DIR/evals/)"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epoch_series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of ``key`` over the epoch records (no per-step ``loss``), by epoch; a
    later record of the same epoch (a resumed run) replaces an earlier one."""
    by_epoch = {
        int(r["epoch"]): float(r[key])
        for r in records
        if "loss" not in r and "epoch" in r and isinstance(r.get(key), (int, float))
    }
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


def curve_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """The :data:`CURVE_KEYS` the records hold per epoch, in that order."""
    return [k for k in CURVE_KEYS if epoch_series(records, k)[0]]


def epoch_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every numeric key of the epoch records (held-out curves, monitors), sorted."""
    skip = {"epoch", "step", "train_seconds"}
    return sorted(
        {
            k
            for r in records
            if "loss" not in r and "epoch" in r
            for k, v in r.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """A short, distinct label per run: the fewest trailing path parts that tell them apart
    (``vicreg`` / ``isd``; ``a/evals/linear-aug-s0-lr0.1`` / ``b/evals/...``)."""
    paths = [Path(d).resolve() for d in run_dirs]
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]  # the same directory given twice
