"""``selfsup viz retrieval / tsne / curves / attention / corr RUN_DIR``: look at a run's
representation. Each parser sets ``handler``; each handler imports what it needs when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from selfsup.analysis.curves import CURVE_KEYS
from selfsup.cli.retrieval import dataset_args
from selfsup.errors import SelfsupError
from selfsup.layout import RunDir


def add_parsers(sub: Any) -> None:
    """``viz`` and its subcommands on the top-level sub-parsers."""
    vz = sub.add_parser("viz", help="look at a run's representation")
    viz_sub = vz.add_subparsers(dest="viz", required=True)
    rt = viz_sub.add_parser(
        "retrieval",
        help="the most and least similar training images of test queries, and precision@k "
        "against random init and raw pixels (ANNOY when installed; its recall@k is printed)",
    )
    rt.add_argument("run_dir", type=Path)
    rt.add_argument("-k", type=int, default=8, help="neighbours per query (default 8)")
    rt.add_argument("--queries", type=int, default=6, help="queries drawn in the grid")
    rt.add_argument("--bank-limit", type=int, default=10_000, help="training images searched")
    rt.add_argument("--query-limit", type=int, default=1_000, help="test queries scored")
    rt.set_defaults(handler=retrieval)
    ts = viz_sub.add_parser(
        "tsne",
        help="one t-SNE panel per epoch saved during training (viz.embed_epochs=[1,5,...]); "
        "a run that saved none is embedded now with its final checkpoint (one panel)",
    )
    ts.add_argument("run_dir", type=Path)
    ts.set_defaults(handler=tsne)
    _add_curves(viz_sub)
    _add_drawings(viz_sub)


def _add_drawings(viz_sub: Any) -> None:
    at = viz_sub.add_parser(
        "attention",
        help="a ViT run's CLS attention over the patches in the last block, per head and "
        "averaged, over a few images (RUN_DIR/plots/attention.png)",
    )
    at.add_argument("run_dir", type=Path)
    at.add_argument("--images", type=int, default=4, help="images (rows) to draw (default 4)")
    dataset_args(at)
    at.set_defaults(handler=attention)

    co = viz_sub.add_parser(
        "corr",
        help="the projector's cross-correlation (VICReg: covariance) matrix per epoch saved "
        "during training (viz.corr_epochs=[1,5,...]) into RUN_DIR/plots/corr.png",
    )
    co.add_argument("run_dir", type=Path)
    co.set_defaults(handler=corr)


def _add_curves(viz_sub: Any) -> None:
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
        "--out",
        type=Path,
        default=None,
        help="PNG (default: RUN_DIR/plots/compare_curves.png of the first run)",
    )
    cv.set_defaults(handler=curves)


def tsne(args: argparse.Namespace) -> int:
    """t-SNE of the embeddings saved during training (``viz.embed_epochs``); a finished run
    that saved none is embedded now, with its final checkpoint (one panel)."""
    from selfsup.analysis.embeddings import saved_epochs, tsne_panels

    if not saved_epochs(args.run_dir):
        from selfsup.pipeline import embed_final
        from selfsup.run.lock import run_lock

        with run_lock(args.run_dir):
            epoch = embed_final(args.run_dir)
        print(
            f"no embeddings were saved during training (viz.embed_epochs): embedded the final "
            f"checkpoint (epoch {epoch}) now; train with viz.embed_epochs=[1,5,10] for a panel "
            "per epoch"
        )
    print(f"t-SNE panels: {tsne_panels(args.run_dir)}")
    return 0


def retrieval(args: argparse.Namespace) -> int:
    from selfsup.analysis.retrieval import retrieval_study
    from selfsup.rundir import load_run

    for name, value in (
        ("-k", args.k),
        ("--queries", args.queries),
        ("--bank-limit", args.bank_limit),
        ("--query-limit", args.query_limit),
    ):
        if value < 1:
            raise SelfsupError(f"{name} must be at least 1, got {value}")
    res = retrieval_study(
        args.run_dir,
        *load_run(args.run_dir),
        k=args.k,
        n_queries=args.queries,
        bank_limit=args.bank_limit,
        query_limit=args.query_limit,
    )
    print(f"precision@{res.k} (share of the {res.k} most similar images of the query's class):")
    for name, value in res.precision.items():
        print(f"  {name}: {100 * value:.1f}%")
    if res.recall is None:
        print("exact search (pip install annoy for approximate search)")
    else:
        print(f"ANNOY recall@{res.k} against exact search: {100 * res.recall:.1f}%")
    print(f"grid: {res.grid}")
    return 0


def curves(args: argparse.Namespace) -> int:
    """Several runs' per-epoch curves in one figure (:func:`selfsup.analysis.plots.
    compare_curves`), e.g. pretrain-then-linear against joint training."""
    from selfsup.analysis.curves import curve_keys, read_metrics
    from selfsup.analysis.plots import compare_curves

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    if args.keys:
        keys = split(args.keys)
    else:
        keys = sorted(
            {k for d in args.run_dirs for k in curve_keys(read_metrics(d))}, key=CURVE_KEYS.index
        )
    if not keys:
        raise SelfsupError(
            "no per-epoch curve in "
            + ", ".join(str(d) for d in args.run_dirs)
            + ": an SSL run logs its held-out loss (val_ssl_loss) with eval.val_images=N, "
            "supervised / joint runs and trained evaluations their train / val loss and top-1; "
            "every run's per-step loss is drawn in RUN_DIR/plots/curves.png"
        )
    labels = split(args.labels) if args.labels else None
    out = args.out or RunDir(args.run_dirs[0]).plot("compare_curves.png")
    print(f"curves: {compare_curves(args.run_dirs, keys, out, labels)}")
    return 0


def attention(args: argparse.Namespace) -> int:
    from selfsup.analysis.attention import attention_figure
    from selfsup.rundir import load_encoder

    if args.images < 1:  # before the run is read
        raise SelfsupError(f"--images must be at least 1, got {args.images}")
    path = attention_figure(
        load_encoder(args.run_dir), images=args.images, dataset=args.dataset, split=args.split
    )
    print(f"attention maps: {path}")
    return 0


def corr(args: argparse.Namespace) -> int:
    from selfsup.analysis.correlation import corr_panels

    print(f"correlation matrices: {corr_panels(args.run_dir)}")
    return 0
