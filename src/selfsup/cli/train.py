"""``selfsup pretrain / supervised / joint``: train a run directory, then evaluate it.

selfsup pretrain --config configs/fashion-mnist/vicreg.yaml --out runs/vicreg train.epochs=5
selfsup pretrain --out runs/vicreg --resume
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfsup.errors import SelfsupError

if TYPE_CHECKING:
    from selfsup.config import Config

EPILOG = """tuning advice:
  * train.batch_size is the global batch; the lr used is train.lr * batch_size / 256.
  * on small data (CIFAR, Fashion-MNIST) a narrower projector (method.projector=2048-2048-2048)
    trains faster and loses little; VICReg's official default is 8192-8192-8192.
  * if the loss becomes NaN, lower train.lr or set train.grad_clip=1.0.
"""
DEFAULTS = "defaults"  # --config defaults: the built-in defaults, asked for on purpose
CONFIG_HELP = (
    "YAML config, e.g. configs/fashion-mnist/vicreg.yaml (see configs/); required for a new "
    "run. `--config defaults` starts from the built-in defaults instead (slow: a ResNet-18 "
    "recipe on synthetic data; for tests, or to set every key as key=value)"
)
VARIANT_HELP = {
    "supervised": "The config's method section is replaced by method.name=supervised: the same "
    "backbone, data and train settings, cross-entropy on method.label_fraction of the labels "
    "(set train.optimizer=adamw or sgd and train.lr as for supervised training).",
    "joint": "Sets joint.enabled=true: loss = cross-entropy on the labelled images of each batch "
    "(joint.label_fraction of the training split keeps its labels) + joint.ssl_weight x the "
    "method's SSL loss.",
}


def add_parsers(sub: Any) -> None:
    """``pretrain``, ``supervised`` and ``joint`` on the top-level sub-parsers."""
    pre = sub.add_parser(
        "pretrain",
        help="pretrain a backbone, then evaluate it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    _run_arguments(pre, "runs/METHOD-DATASET-TIME")
    pre.set_defaults(handler=run)
    for name, text in (
        ("supervised", "train the config's backbone from scratch with labels (the baseline)"),
        ("joint", "train the config's SSL method jointly with a supervised head"),
    ):
        sp = sub.add_parser(
            name,
            help=text,
            description=text + ". " + VARIANT_HELP[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _run_arguments(sp, "runs/NAME-DATASET-TIME")
        sp.set_defaults(handler=run)


def _run_arguments(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--config", type=Path, help=CONFIG_HELP)
    p.add_argument("--out", type=Path, help=f"run directory (default: {default_out})")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run in --out from its last checkpoint, with its own "
        "config.yaml (no --config); overrides may change train.epochs, train.progress, "
        "train.log_every, train.checkpoint_every, train.skip_nonfinite, eval.* (not "
        "eval.val_images) and viz.*",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out, finished or not (its files are removed once "
        "this run's config and data are valid; other files stay)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides with dotted keys, e.g. train.epochs=5 data.limit=10000",
    )


def run(args: argparse.Namespace) -> int:
    """Train (or continue) the run, evaluate it, print its results."""
    from selfsup.distributed import init_from_env, is_distributed
    from selfsup.pipeline import pretrain
    from selfsup.run.lock import rank_zero_lock
    from selfsup.run.start import check_run_flags

    check_run_flags(args.resume, args.overwrite)  # (before --config: which one is meant?)
    cfg = _resume_config(args) if args.resume else _new_config(args)
    init_from_env(cfg.train.device)  # under torchrun: join the process group (DDP)
    if args.out is None and is_distributed():
        raise SelfsupError("under torchrun give --out RUN_DIR: every process must use the same")
    out = args.out or _default_out(cfg)
    try:
        with rank_zero_lock(out):  # one writer per run directory (selfsup.run.lock)
            results = pretrain(cfg, out, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"\nselfsup: interrupted; {_what_is_kept(out)}", file=sys.stderr)
        return 130
    if results is None:  # another torchrun rank: rank 0 evaluates and reports
        return 0
    from selfsup.cli.evaluate import print_results

    print()
    print_results(results)
    print(f"\nrun directory: {out}")
    return 0


def _what_is_kept(out: Path) -> str:
    from selfsup.layout import RunDir

    if RunDir(out).checkpoint.exists():
        return (
            f"the last checkpoint is kept in {RunDir(out).checkpoint} (continue with: selfsup "
            f"pretrain --out {out} --resume)"
        )
    return "it stopped before its first checkpoint: nothing was kept (run the command again)"


def _new_config(args: argparse.Namespace) -> Config:
    from selfsup.config import load_config

    if args.config is None:
        raise SelfsupError(missing_config(args.command))
    path = None if str(args.config) == DEFAULTS else args.config
    if args.command == "supervised":
        return load_config(path, args.overrides, method={"name": "supervised"})
    if args.command == "joint":
        return load_config(path, ["joint.enabled=true", *args.overrides])
    return load_config(path, args.overrides)


def missing_config(command: str) -> str:
    """The refusal of a new run without ``--config``: the shipped configs to choose from."""
    from selfsup.config import Config

    d = Config()
    return (
        f"a new run needs --config FILE, e.g. selfsup {command} --config "
        f"configs/fashion-mnist/vicreg.yaml --out runs/NAME. Shipped configs:\n"
        f"{shipped_configs()}\n`--config defaults` starts from the built-in defaults on "
        f"purpose ({d.method.name}, {d.backbone.name}, data.dataset={d.data.dataset}: a "
        "full-size recipe), with the keys to change set as key=value"
    )


def shipped_configs() -> str:
    """The YAML files of ``configs/`` (the working directory's, else the source checkout's),
    one line per folder: ``  configs/cifar10/{dino,simclr,vicreg}.yaml``."""
    checkout = Path(__file__).resolve().parents[3] / "configs"
    for root in (Path("configs"), checkout):
        files = sorted(root.glob("**/*.yaml")) if root.is_dir() else []
        if files:
            break
    else:
        return "  (no configs/ folder here: they ship in the selfsup repository's configs/)"
    folders: dict[Path, list[str]] = {}
    for f in sorted(files, key=lambda f: (f.parent != root, f)):  # configs/demo.yaml first
        folders.setdefault(f.parent, []).append(f.stem)
    lines = []
    for folder, stems in folders.items():
        names = stems[0] if len(stems) == 1 else "{" + ",".join(stems) + "}"
        lines.append(f"  {folder}/{names}.yaml")
    return "\n".join(lines)


def _resume_config(args: argparse.Namespace) -> Config:
    """The config of the run ``--resume`` continues: its own, with the overrides that may change
    on resume (:func:`selfsup.rundir.resume_config`), for the command that trained it."""
    from selfsup.config import method_label
    from selfsup.rundir import resume_config

    if args.out is None:
        raise SelfsupError("--resume needs --out RUN_DIR, the run to continue")
    if args.config is not None:
        raise SelfsupError(
            f"--resume continues {args.out} with its own config.yaml; --config is not read then. "
            "Drop --config (pass the keys that may change on resume, such as train.epochs=N, "
            "as overrides), or start a new run with it"
        )
    cfg = resume_config(args.out, args.overrides)
    kind = {"supervised": cfg.method.name == "supervised", "joint": cfg.joint.enabled}
    if not kind.get(args.command, True):  # (pretrain continues any run: the study runner's way)
        raise SelfsupError(
            f"{args.out} is a {method_label(cfg)} run, not one of `selfsup {args.command}`; "
            "continue it with: selfsup pretrain --out RUN_DIR --resume"
        )
    return cfg


def _default_out(cfg: Config) -> Path:
    from selfsup.config import method_label

    dataset = cfg.data.dataset.replace(":", "-").replace("/", "_")
    return Path("runs") / f"{method_label(cfg)}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
