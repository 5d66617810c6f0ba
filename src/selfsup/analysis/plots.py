"""Plots of a run's evaluation records: one confusion-matrix PNG per record.

matplotlib is imported lazily with the non-interactive Agg backend, so these functions work on
headless machines and importing this module costs nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.analysis.curves import epoch_keys, epoch_series, read_metrics, run_labels
from selfsup.atomic import atomic_path
from selfsup.errors import SelfsupError
from selfsup.evaluate.table import column_label
from selfsup.layout import RunDir

ANNOTATE_MAX_CLASSES = 20


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write ``fig`` as a PNG at ``path`` through the atomic writer (an interrupted save leaves
    the old file whole), creating the folder, and close the figure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", **savefig)
    finally:
        pyplot().close(fig)
    return path


def _figure_size(k: int) -> float:
    """Square figure side in inches: about 0.5 in per class for small K (room for counts),
    0.16 in per class for K = 100, within [4, 18]."""
    per_class = 0.5 if k <= ANNOTATE_MAX_CLASSES else 0.16
    return min(18.0, max(4.0, 2.5 + per_class * k))


def _annotate_counts(ax: Any, cm: Any, shade: Any) -> None:
    """Write each non-zero count in its cell, white on dark cells."""
    k = cm.shape[0]
    size = 8 if k <= 12 else 7
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                colour = "white" if shade[i, j] > 0.6 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=size, color=colour)


def save_confusion_png(
    confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str
) -> Path:
    """Write a confusion matrix (rows = true class, columns = predicted, counts) as a PNG.

    Colours are row-normalised (the fraction of each true class predicted as each class, so
    rare and common classes read alike) on a square-root scale, so that the few-percent
    confusions that matter stay visible next to a dark diagonal; counts are written in the
    cells when K <= 20. Tick labels are the class names, the predicted-class ones rotated.
    Returns the path.
    """
    import numpy as np
    from matplotlib.colors import PowerNorm

    plt = pyplot()
    cm = np.asarray(confusion, dtype=np.int64)
    k = cm.shape[0]
    if cm.ndim != 2 or cm.shape != (k, k):
        raise ValueError(f"confusion must be square, got shape {cm.shape}")
    if len(classes) != k:
        raise ValueError(f"{len(classes)} class names for a {k}x{k} confusion matrix")
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    small = k <= ANNOTATE_MAX_CLASSES
    side = _figure_size(k)
    colour_norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=110)
    try:
        im = ax.imshow(frac, cmap="Blues", norm=colour_norm, interpolation="nearest")
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        ticks = [0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0]
        cbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        cbar.set_label("fraction of true class (√ scale)", fontsize=9)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        tick_size = 9 if small else 6
        ax.set_xticklabels(
            classes,
            rotation=45 if small else 90,
            ha="right" if small else "center",
            rotation_mode="anchor" if small else "default",
            fontsize=tick_size,
        )
        ax.set_yticklabels(classes, fontsize=tick_size)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=10)
        if small:
            _annotate_counts(ax, cm, colour_norm(frac))
    except BaseException:
        plt.close(fig)
        raise
    return save_figure(fig, path, bbox_inches="tight", pad_inches=0.15)


def _safe(text: Any) -> str:
    """A file-name-safe token: anything but letters, digits, '.', '_' and '-' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


def confusion_file_name(rec: dict[str, Any]) -> str:
    """``confusion-<protocol>-<dataset>-<init>[-k<k>][-f<fraction>][-r<ratio>]-s<seed>.png``."""
    parts = [rec["protocol"], rec["dataset"], rec.get("init", "pretrained")]
    if rec.get("k") is not None:
        parts.append(f"k{rec['k']}")
    if rec.get("fraction") is not None:
        parts.append(f"f{rec['fraction']:g}")
    if rec.get("ratio") is not None:
        parts.append(f"r{rec['ratio']:g}")
    parts.append(f"s{rec.get('seed', 0)}")
    return "confusion-" + "-".join(_safe(p) for p in parts) + ".png"


def _class_names(results: dict[str, Any], dataset: str, k: int) -> list[str]:
    names = (results.get("classes") or {}).get(dataset)
    if names is not None and len(names) == k:
        return [str(n) for n in names]
    return [str(i) for i in range(k)]


STEP_KEYS_SKIPPED = ("step", "epoch", "lr", "images_per_s")  # not loss parts


def save_curves_png(run_dir: str | Path) -> Path | None:
    """``plots/curves.png`` from ``metrics.jsonl``: the loss and each logged part against the
    step, the learning rate, and the epoch records (online kNN, collapse monitors) against the
    epoch; the held-out ``val_ssl_loss`` (``eval.val_images``) as points at each epoch's last
    step on the SSL loss panel. None when the run has logged no step."""
    run_dir = Path(run_dir)
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return None
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r for r in recs if "loss" in r]
    epochs = [r for r in recs if any(k.startswith("monitor_") for k in r)]
    if not steps:
        return None
    parts = [k for k in steps[-1] if k not in STEP_KEYS_SKIPPED and isinstance(steps[-1][k], float)]
    last = epochs[-1] if epochs else {}
    monitors = [
        k
        for k, v in last.items()
        if k.startswith("monitor_") and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    plt = pyplot()
    panels = len(parts) + 1 + len(monitors)
    cols = min(4, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    flat = list(axes.flat)
    x = [r["step"] for r in steps]
    for ax, key in zip(flat, [*parts, "lr"], strict=False):
        ax.plot(x, [r.get(key) for r in steps], lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    held = [r for r in recs if "val_ssl_loss" in r and "loss" not in r]
    if held:  # a joint run's SSL loss is its ssl_loss part; an SSL run's is the loss itself
        ax = flat[parts.index("ssl_loss") if "ssl_loss" in parts else 0]
        ax.lines[0].set_label("train (per step)")
        ax.plot(
            [r["step"] for r in held],
            [r["val_ssl_loss"] for r in held],
            "o-",
            ms=3,
            label="held-out (val_ssl_loss)",
        )
        ax.legend(fontsize=7)
    for ax, key in zip(flat[len(parts) + 1 :], monitors, strict=False):
        at = [r.get("epoch", r.get("epoch_fraction")) for r in epochs]  # mid-epoch marks too
        ax.plot(at, [r[key] for r in epochs], marker="o", ms=3)
        ax.set_title(key.removeprefix("monitor_"), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.suptitle(f"{run_dir.name}: training curves (metrics.jsonl)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, RunDir(run_dir).plot("curves.png"), dpi=100)


def save_train_val_png(run_dir: str | Path) -> Path | None:
    """``plots/train_val.png`` from ``metrics.jsonl``: loss and top-1, train against held-out
    (``eval.val_images``), per epoch. None when the run has no held-out classification
    curves."""
    run_dir = Path(run_dir)
    recs = read_metrics(run_dir) if RunDir(run_dir).metrics.is_file() else []
    if not epoch_series(recs, "val_loss")[0]:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), squeeze=False)
    for ax, what in zip(axes[0], ("loss", "top1"), strict=True):
        for side in ("train", "val"):
            epochs, values = epoch_series(recs, f"{side}_{what}")
            name = "train (fixed sample)" if side == "train" else "validation (held out)"
            ax.plot(epochs, values, marker="o", ms=3, label=name)
        ax.set_title("cross-entropy" if what == "loss" else "top-1 accuracy", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.suptitle(f"{run_dir.name}: train vs validation", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, RunDir(run_dir).plot("train_val.png"), dpi=100)


def compare_curves(
    run_dirs: Sequence[str | Path],
    keys: Sequence[str],
    out_png: str | Path,
    labels: Sequence[str] | None = None,
) -> Path:
    """One figure comparing several runs' per-epoch curves: a panel per key of ``keys`` (e.g.
    ``val_top1``, ``val_loss``), a line per run that logged it (labels: ``labels``, else the
    run directories' names). A run directory may be a trained evaluation's
    (``RUN_DIR/evals/linear-aug-s0-lr0.1``), so pretrain-then-linear and joint training can
    stand in one figure. Returns ``out_png``."""
    if not run_dirs or not keys:
        raise SelfsupError("compare_curves needs at least one run directory and one key")
    labels = list(labels) if labels is not None else run_labels(run_dirs)
    if len(labels) != len(run_dirs):
        raise SelfsupError(f"{len(labels)} labels for {len(run_dirs)} run directories")
    records = [read_metrics(d) for d in run_dirs]
    for key in keys:
        if not any(epoch_series(r, key)[0] for r in records):
            found = sorted({k for r in records for k in epoch_keys(r)})
            raise SelfsupError(
                f"no run logged {key!r} per epoch; they have: {', '.join(found) or 'none'} "
                "(train with eval.val_images=N to log the held-out curves)"
            )
    plt = pyplot()
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for i, (recs, label) in enumerate(zip(records, labels, strict=True)):
            epochs, values = epoch_series(recs, key)
            if epochs:  # a run keeps its colour in every panel
                ax.plot(epochs, values, marker="o", ms=3, label=label, color=f"C{i % 10}")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=100)


def save_run_plots(run_dir: str | Path, results: dict[str, Any] | None = None) -> list[Path]:
    """Write ``plots/confusion-....png`` for every record of ``results`` (default: those of
    ``run_dir/results.json``) that has a confusion matrix; class names from
    ``results["classes"][dataset]`` when present (and of the right length), else "0".."K-1".
    Returns the written paths in record order."""
    run_dir = Path(run_dir)
    if results is None:
        results = json.loads(RunDir(run_dir).results.read_text())
    out_dir = RunDir(run_dir).plots
    written: list[Path] = []
    for rec in results.get("evals", []):
        confusion = rec.get("confusion")
        if not confusion:
            continue
        path = out_dir / confusion_file_name(rec)
        n = 2
        while path in written:  # records identical up to seed: keep both
            path = out_dir / confusion_file_name(rec).replace(".png", f"-{n}.png")
            n += 1
        title = f"{results.get('method', run_dir.name)}: {column_label(rec)} on {rec['dataset']}"
        top1 = f", top-1 {100 * rec['top1']:.1f}%" if rec.get("top1") is not None else ""
        title += f"\nseed {rec.get('seed', 0)}{top1}"
        classes = _class_names(results, rec["dataset"], len(confusion))
        written.append(save_confusion_png(confusion, classes, path, title))
    curves = [save_curves_png(run_dir), save_train_val_png(run_dir)]
    # trained evaluations (RUN_DIR/evals/.../<name>/metrics.jsonl) draw here too: evaluation
    # itself draws nothing (it sits below the analysis layer)
    trained = sorted(RunDir(run_dir).evals.glob("**/metrics.jsonl"))
    curves += [save_train_val_png(m.parent) for m in trained]
    return [*written, *(p for p in curves if p is not None)]
