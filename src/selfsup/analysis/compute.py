"""Accuracy against pretraining compute for a set of runs (``selfsup table RUN ... --plot-compute
PNG``): which method reaches an accuracy for the least compute.

The x axis is a run's training compute from ``results.json["compute"]`` (written by pretraining,
see :mod:`selfsup.train.compute`): ``flops``, the counted FLOPs of a training step per image x
the images seen (log scale), or ``wall``, the pretraining wall seconds (comparable only between
runs on the same hardware). Each measurement (``knn k=20``, ``linear``, ...) of the pretrained
backbones is one line through the runs in order of compute, the points labelled with the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.analysis.plots import pyplot, save_figure
from selfsup.errors import SelfsupError
from selfsup.evaluate.table import aggregate, comparison_columns, measurement_key, run_labels

COMPUTE_AXES = {
    "flops": ("train_flops", "training compute (FLOPs: step FLOPs per image x images seen)"),
    "wall": ("train_wall_s", "pretraining wall time (s)"),
}


def compute_points(
    runs: Sequence[tuple[str, dict[str, Any]]], x: str = "flops", metric: str = "top1"
) -> dict[str, list[tuple[float, float, str]]]:
    """measurement label -> [(compute, seed-mean ``metric``, run label)] sorted by compute, over
    the runs that recorded that compute figure, for the pretrained (and supervised / joint:
    trained) measurements. A ``SelfsupError`` when no run recorded it."""
    if x not in COMPUTE_AXES:
        raise SelfsupError(f"unknown compute axis {x!r}; valid: {', '.join(COMPUTE_AXES)}")
    key = COMPUTE_AXES[x][0]
    names = run_labels(runs)
    aggs = [aggregate(res.get("evals", [])) for _, res in runs]
    _, labels = comparison_columns(aggs)
    points: dict[str, list[tuple[float, float, str]]] = {}
    for name, (_, res), run_aggs in zip(names, runs, aggs, strict=True):
        cost = (res.get("compute") or {}).get(key)
        if not cost:
            continue
        for a in run_aggs:
            if a.get("init") in ("pretrained", "trained") and a.get(metric) is not None:
                label = labels[measurement_key(a)]
                points.setdefault(label, []).append((float(cost), float(a[metric]), name))
    if not points:
        raise SelfsupError(
            f"none of the runs records compute.{key} with an evaluation; runs pretrained by "
            "this selfsup write it into results.json"
        )
    return {label: sorted(p) for label, p in points.items()}


def plot_accuracy_vs_compute(
    runs: Sequence[tuple[str, dict[str, Any]]],
    path: str | Path,
    *,
    x: str = "flops",
    metric: str = "top1",
) -> Path:
    """Draw :func:`compute_points` into the PNG ``path`` (atomically) and return it."""
    points = compute_points(runs, x, metric)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in points.items():
        xs, ys, _ = zip(*pts, strict=True)
        ax.plot(xs, [100 * y for y in ys], marker="o", label=label)
        for px, py, name in pts:
            ax.annotate(name, (px, 100 * py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if x == "flops":
        ax.set_xscale("log")
    ax.set_xlabel(COMPUTE_AXES[x][1])
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("accuracy against pretraining compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)
