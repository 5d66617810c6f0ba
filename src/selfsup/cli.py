"""The ``selfsup`` command line.

selfsup pretrain --config configs/fashion-mnist/vicreg.yaml --out runs/vicreg train.epochs=5
selfsup pretrain --out runs/vicreg --resume
selfsup eval runs/vicreg --protocol knn,linear --dataset cifar10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from selfsup.config import Config, apply_overrides, config_from_dict, config_to_dict, load_config
from selfsup.errors import SelfsupError

EPILOG = """tuning advice:
  * train.batch_size is the global batch; the lr used is train.lr * batch_size / 256.
  * on small data (CIFAR, Fashion-MNIST) a narrower projector (method.projector=2048-2048-2048)
    trains faster and loses little; VICReg's official default is 8192-8192-8192.
  * if the loss becomes NaN, lower train.lr or set train.grad_clip=1.0.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selfsup",
        description="Self-supervised pretraining and evaluation of backbones.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    sub = p.add_subparsers(dest="command", required=True)

    pre = sub.add_parser(
        "pretrain",
        help="pretrain a backbone, then evaluate it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    pre.add_argument("--config", type=Path, help="YAML config (see configs/)")
    pre.add_argument("--out", type=Path, help="run directory (default: runs/METHOD-DATASET-TIME)")
    pre.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    pre.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides with dotted keys, e.g. train.epochs=5 data.limit=10000",
    )

    ev = sub.add_parser("eval", help="evaluate a finished run's backbone")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument(
        "--protocol",
        default=None,
        help="comma-separated protocols (default: the run's eval.protocols)",
    )
    ev.add_argument(
        "--dataset",
        default=None,
        help="comma-separated datasets (default: the pretraining dataset)",
    )
    ev.add_argument(
        "overrides",
        nargs="*",
        metavar="eval.key=value",
        help="eval settings for this evaluation only, e.g. eval.compare_random=true",
    )
    return p


def _pretrain(args: argparse.Namespace) -> int:
    from selfsup.evaluate.table import init_table
    from selfsup.pipeline import pretrain

    if args.resume:
        if args.out is None:
            raise SelfsupError("--resume needs --out RUN_DIR, the run to continue")
        import yaml

        saved = args.out / "config.yaml"
        if not saved.is_file():
            raise SelfsupError(f"cannot resume: {args.out} holds no run (no config.yaml)")
        cfg = config_from_dict(apply_overrides(yaml.safe_load(saved.read_text()), args.overrides))
    else:
        cfg = load_config(args.config, args.overrides)
    out = args.out or _default_out(cfg)
    results = pretrain(cfg, out, resume=args.resume)
    print()
    print(init_table(results["evals"]))
    print(f"\nrun directory: {out}")
    return 0


def _default_out(cfg: Config) -> Path:
    dataset = cfg.data.dataset.replace(":", "-").replace("/", "_")
    return Path("runs") / f"{cfg.method.name}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _eval(args: argparse.Namespace) -> int:
    from selfsup.evaluate.table import init_table
    from selfsup.pipeline import evaluate_run

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    results = evaluate_run(
        args.run_dir,
        protocols=split(args.protocol),
        datasets=split(args.dataset),
        overrides=args.overrides,
    )
    print(init_table(results["evals"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "pretrain":
            return _pretrain(args)
        return _eval(args)
    except SelfsupError as err:
        print(f"selfsup: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nselfsup: interrupted; the last finished epoch is kept in checkpoints/last.pt "
            "(continue with: selfsup pretrain --out RUN_DIR --resume)",
            file=sys.stderr,
        )
        return 130


__all__ = ["Config", "config_to_dict", "main"]
