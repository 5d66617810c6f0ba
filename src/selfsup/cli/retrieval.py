"""``selfsup index / retrieve / embed``: a finished run's representation, indexed, searched
and exported. Each parser sets ``handler``, which
:func:`selfsup.cli.main` calls; each imports what it needs when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError


def dataset_args(p: argparse.ArgumentParser, *, default_split: str = "train") -> None:
    p.add_argument(
        "--dataset",
        default=None,
        help="a dataset name, e.g. cifar10 or imagefolder:PATH (default: the run's pretraining "
        "dataset)",
    )
    p.add_argument(
        "--split",
        default=default_split,
        help="train or test (STL-10 also unlabeled, train+unlabeled); default: %(default)s",
    )


def add_parsers(sub: Any) -> None:
    """``index``, ``retrieve`` and ``embed`` on the top-level sub-parsers."""
    ix = sub.add_parser(
        "index",
        help="build an ANNOY index (angular) of a run's features of a split, saved in "
        "RUN_DIR/index/ for selfsup retrieve",
    )
    ix.add_argument("run_dir", type=Path)
    dataset_args(ix)
    ix.set_defaults(handler=_index)

    rt = sub.add_parser(
        "retrieve",
        help="the k images of an index most (or least) similar to a query image, printed and drawn",
    )
    rt.add_argument("run_dir", type=Path)
    rt.add_argument(
        "--query",
        required=True,
        help="an image file (decoded and resized like the dataset), or an image of the indexed "
        "split: its index, or for an image folder its relative path",
    )
    rt.add_argument("-k", type=int, default=8, help="images to retrieve (default 8)")
    rt.add_argument("--dissimilar", action="store_true", help="the least similar instead")
    rt.add_argument("--out", type=Path, help="the PNG (default: RUN_DIR/plots/retrieve-...png)")
    dataset_args(rt)
    rt.set_defaults(handler=_retrieve)

    em = sub.add_parser(
        "embed",
        help="write a run's features of a split with labels and image ids: FILE.npy + "
        "FILE.json, or FILE.parquet (needs pyarrow)",
    )
    em.add_argument("run_dir", type=Path)
    em.add_argument("--out", type=Path, required=True, help="FILE, FILE.npy or FILE.parquet")
    dataset_args(em)
    em.set_defaults(handler=_embed)


def _index(args: argparse.Namespace) -> int:
    from selfsup.analysis.index import build_index
    from selfsup.run.lock import run_lock
    from selfsup.rundir import load_encoder

    with run_lock(args.run_dir):  # writes RUN_DIR/index/
        path, meta = build_index(load_encoder(args.run_dir), args.dataset, args.split)
    print(
        f"indexed {meta['n']} images of {meta['dataset']} {meta['split']} ({meta['dim']}-d "
        f"{meta['backbone']} features, checkpoint {meta['checkpoint']}): {path}"
    )
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from selfsup.analysis.query import hit_lines, retrieve
    from selfsup.rundir import load_encoder

    if args.k < 1:
        raise SelfsupError(f"-k must be at least 1, got {args.k}")
    where = {"dataset": args.dataset, "split": args.split, "out": args.out}
    encoder = load_encoder(args.run_dir)
    res = retrieve(encoder, args.query, k=args.k, dissimilar=args.dissimilar, **where)
    which = "least" if args.dissimilar else "most"
    split = f"{res.meta['dataset']} {res.meta['split']}"
    print(f"the {len(res.hits)} {which} similar images of {split} to {args.query}:")
    print("\n".join(hit_lines(res)))
    print(f"drawn: {res.plot}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from selfsup.analysis.feature_file import write_features
    from selfsup.analysis.index import embed_split
    from selfsup.rundir import load_encoder

    emb = embed_split(load_encoder(args.run_dir), args.dataset, args.split)
    files = write_features(emb, args.out)
    print(f"wrote {len(emb.data)} x {emb.meta['dim']} features: {', '.join(map(str, files))}")
    return 0
