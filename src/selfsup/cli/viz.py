"""``selfsup viz curves RUN_DIR [RUN_DIR ...]``: several runs' per-epoch curves in one figure
(:func:`selfsup.analysis.plots.compare_curves`), e.g. pretrain-then-linear against joint
training. Registered under ``selfsup viz`` by :mod:`selfsup.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.analysis.curves import CURVE_KEYS, curve_keys, read_metrics
from selfsup.analysis.plots import compare_curves


def add_viz_parser(viz_sub: argparse._SubParsersAction) -> None:
    """Add ``curves`` to the ``selfsup viz`` subcommands."""
    cv = viz_sub.add_parser(
        "curves",
        help="per-epoch curves of several runs in one figure (train with eval.val_images=N "
        "for train / val loss and top-1, val_ssl_loss)",
    )
    cv.add_argument(
        "run_dirs",
        type=Path,
        nargs="+",
        metavar="RUN_DIR",
        help="run directories, or trained evaluations' (RUN_DIR/evals/linear-aug-s0-lr0.1)",
    )
    cv.add_argument(
        "--keys",
        default=None,
        help=f"comma-separated per-epoch keys, e.g. val_top1,val_loss (default: those of "
        f"{', '.join(CURVE_KEYS)} the runs logged)",
    )
    cv.add_argument("--labels", default=None, help="comma-separated legend labels, one per RUN_DIR")
    cv.add_argument(
        "--out", type=Path, default=None, help="PNG (default: RUN_DIR/plots/compare_curves.png "
        "of the first run)",
    )  # fmt: skip


def viz_curves(args: argparse.Namespace) -> int:
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    if args.keys:
        keys = split(args.keys)
    else:
        keys = sorted(
            {k for d in args.run_dirs for k in curve_keys(read_metrics(d))}, key=CURVE_KEYS.index
        )
    labels = split(args.labels) if args.labels else None
    out = args.out or args.run_dirs[0] / "plots" / "compare_curves.png"
    print(f"curves: {compare_curves(args.run_dirs, keys, out, labels)}")
    return 0
