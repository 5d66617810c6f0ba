"""The ``selfsup`` command line.

selfsup pretrain --config configs/fashion-mnist/vicreg.yaml --out runs/vicreg train.epochs=5
selfsup pretrain --out runs/vicreg --resume
selfsup eval runs/vicreg --protocol knn,linear --dataset cifar10

One module per command group; each adds its parsers and sets ``handler`` on every command
(``set_defaults(handler=...)``), and :func:`main` calls it. Building the parser imports no torch
(nor numpy, PIL, ...): a handler imports what its command needs when it runs, so ``selfsup
--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys

from selfsup import __version__
from selfsup.cli import evaluate, export, faces, prepare, report, retrieval, study, train, viz
from selfsup.errors import SelfsupError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selfsup",
        description="Self-supervised pretraining and evaluation of backbones.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=train.EPILOG,
    )
    p.add_argument("--version", action="version", version=f"selfsup {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    train.add_parsers(sub)  # pretrain, supervised, joint
    evaluate.add_parsers(sub)  # table, eval
    export.add_parsers(sub)
    viz.add_parsers(sub)  # viz retrieval, tsne, curves, attention, corr
    retrieval.add_parsers(sub)  # index, retrieve, embed
    faces.add_parsers(sub)
    report.add_parsers(sub)
    prepare.add_parsers(sub)
    study.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse binds the (empty) overrides at the first positional, so key=value pairs after an
    # option (selfsup eval RUN --protocol knn eval.x=1) arrive here: they are overrides too
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.handler(args)
    except SelfsupError as err:
        print(f"selfsup: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nselfsup: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
