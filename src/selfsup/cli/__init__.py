"""The ``selfsup`` command line.

selfsup pretrain --config configs/fashion-mnist/vicreg.yaml --out runs/vicreg train.epochs=5
selfsup pretrain --out runs/vicreg --resume
selfsup eval runs/vicreg --protocol knn,linear --dataset cifar10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import yaml

from selfsup import cli_faces, cli_prepare, cli_report, cli_study
from selfsup.analysis.compute import COMPUTE_AXES, plot_accuracy_vs_compute
from selfsup.analysis.embeddings import tsne_panels
from selfsup.analysis.retrieval import retrieval_study
from selfsup.backbones.weights import backbone_state, export_backbone
from selfsup.cli_curves import add_viz_parser, viz_curves
from selfsup.cli_retrieval import add_parsers as add_retrieval_parsers
from selfsup.config import (
    EVAL_PRESETS,
    Config,
    config_to_dict,
    load_config,
    method_label,
    preset_overrides,
)
from selfsup.distributed import init_from_env, is_distributed
from selfsup.errors import SelfsupError
from selfsup.evaluate.table import (
    METRICS,
    baseline_verdict,
    comparison_table,
    init_table,
    merge_seed_runs,
    paired_tests,
)
from selfsup.pipeline import evaluate_run, pretrain
from selfsup.run.lock import rank_zero_lock, run_lock, writes_into
from selfsup.rundir import load_run_config, read_results, resume_config
from selfsup.train.checkpoint import load_checkpoint

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
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its own config.yaml; "
        "overrides may change train.epochs, train.progress, train.log_every, "
        "train.checkpoint_every, train.skip_nonfinite, eval.* (not eval.val_images) and viz.*",
    )
    pre.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its files are removed once this run's config "
        "and data are valid)",
    )
    pre.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides with dotted keys, e.g. train.epochs=5 data.limit=10000",
    )

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
        sp.add_argument("--config", type=Path, help="YAML config (see configs/)")
        sp.add_argument("--out", type=Path, help="run directory (default: runs/NAME-DATASET-TIME)")
        sp.add_argument("--resume", action="store_true", help="continue the run in --out")
        sp.add_argument("--overwrite", action="store_true", help="replace the run in --out")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    tb = sub.add_parser("table", help="compare finished runs in one results table")
    tb.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    tb.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    tb.add_argument("--metric", choices=list(METRICS), default="top1")
    tb.add_argument(
        "--paired",
        action="store_true",
        help="also test each run against the first on the same test images (exact McNemar)",
    )
    tb.add_argument(
        "--merge-seeds",
        action="store_true",
        help="pool runs whose configs differ only in seed into one row (mean ± std over "
        "pretraining seeds)",
    )
    tb.add_argument(
        "--plot-compute",
        type=Path,
        metavar="PNG",
        help="also draw --metric against pretraining compute (--compute-axis) into PNG",
    )
    tb.add_argument("--compute-axis", choices=list(COMPUTE_AXES), default="flops")

    ex = sub.add_parser(
        "export",
        help="write a run's backbone weights for sharing (safetensors: no code can hide in it)",
    )
    ex.add_argument("run_dir", type=Path)
    ex.add_argument("--format", choices=["safetensors", "torch"], default="safetensors")
    ex.add_argument("--out", type=Path, help="file (default: RUN_DIR/export/backbone.FORMAT)")

    vz = sub.add_parser("viz", help="look at a run's representation")
    vz_sub = vz.add_subparsers(dest="viz", required=True)
    rt = vz_sub.add_parser(
        "retrieval",
        help="the most and least similar training images of test queries, and precision@k "
        "against random init and raw pixels (ANNOY when installed; its recall@k is printed)",
    )
    rt.add_argument("run_dir", type=Path)
    rt.add_argument("-k", type=int, default=8, help="neighbours per query (default 8)")
    rt.add_argument("--queries", type=int, default=6, help="queries drawn in the grid")
    rt.add_argument("--bank-limit", type=int, default=10_000, help="training images searched")
    rt.add_argument("--query-limit", type=int, default=1_000, help="test queries scored")
    ts = vz_sub.add_parser(
        "tsne",
        help="one t-SNE panel per epoch saved during training (viz.embed_epochs=[1,5,...])",
    )
    ts.add_argument("run_dir", type=Path)
    add_viz_parser(vz_sub)
    add_retrieval_parsers(sub, vz_sub)  # index, retrieve, embed; viz attention, corr

    cli_faces.add_parsers(sub)

    cli_report.add_parsers(sub)

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
    ev.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    ev.add_argument(
        "--preset",
        choices=list(EVAL_PRESETS),
        help="a published evaluation's settings (docs/evaluation.md cites each)",
    )
    ev.add_argument("--fraction", default=None, help="label fractions for finetune, e.g. 0.01,0.1")
    ev.add_argument(
        "overrides",
        nargs="*",
        metavar="eval.key=value",
        help="eval settings for this evaluation only, e.g. eval.compare_random=true",
    )
    cli_prepare.add_parsers(sub)
    cli_study.add_parsers(sub)
    return p


VARIANT_HELP = {
    "supervised": "The config's method section is replaced by method.name=supervised: the same "
    "backbone, data and train settings, cross-entropy on method.label_fraction of the labels "
    "(set train.optimizer=adamw or sgd and train.lr as for supervised training).",
    "joint": "Sets joint.enabled=true: loss = cross-entropy on the labelled images of each batch "
    "(joint.label_fraction of the training split keeps its labels) + joint.ssl_weight x the "
    "method's SSL loss.",
}


def _pretrain(args: argparse.Namespace) -> int:
    if args.resume:
        cfg = _resume_config(args)
    elif args.command == "supervised":
        cfg = load_config(args.config, args.overrides, method={"name": "supervised"})
    elif args.command == "joint":
        cfg = load_config(args.config, ["joint.enabled=true", *args.overrides])
    else:
        cfg = load_config(args.config, args.overrides)
    if args.out is None and is_distributed():
        raise SelfsupError("under torchrun give --out RUN_DIR: every process must use the same")
    out = args.out or _default_out(cfg)
    with rank_zero_lock(out):  # one writer per run directory (selfsup.run.lock)
        results = pretrain(cfg, out, resume=args.resume, overwrite=args.overwrite)
    if results is None:  # another torchrun rank: rank 0 evaluates and reports
        return 0
    print()
    print(init_table(results["evals"]))
    _print_verdict(results["evals"])
    print(f"\nrun directory: {out}")
    return 0


def _resume_config(args: argparse.Namespace) -> Config:
    """The config of the run ``--resume`` continues: its own, with the overrides that may change
    on resume (:func:`selfsup.rundir.resume_config`), for the command that trained it."""
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


def _viz(args: argparse.Namespace) -> int:
    if args.viz == "tsne":
        print(f"t-SNE panels: {tsne_panels(args.run_dir)}")
        return 0
    if args.viz == "curves":
        return viz_curves(args)
    for name, value in (
        ("-k", args.k),
        ("--queries", args.queries),
        ("--bank-limit", args.bank_limit),
        ("--query-limit", args.query_limit),
    ):
        if value < 1:
            raise SelfsupError(f"{name} must be at least 1, got {value}")
    res = retrieval_study(
        args.run_dir, k=args.k, n_queries=args.queries, bank_limit=args.bank_limit,
        query_limit=args.query_limit,
    )  # fmt: skip
    print(f"precision@{res.k} (share of the {res.k} most similar images of the query's class):")
    for name, value in res.precision.items():
        print(f"  {name}: {100 * value:.1f}%")
    if res.recall is None:
        print("exact search (pip install annoy for approximate search)")
    else:
        print(f"ANNOY recall@{res.k} against exact search: {100 * res.recall:.1f}%")
    print(f"grid: {res.grid}")
    return 0


def _default_out(cfg: Config) -> Path:
    dataset = cfg.data.dataset.replace(":", "-").replace("/", "_")
    return Path("runs") / f"{method_label(cfg)}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _eval(args: argparse.Namespace) -> int:

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    overrides = [*(preset_overrides(args.preset) if args.preset else []), *args.overrides]
    if args.seeds:
        overrides.append(f"eval.seeds=[{args.seeds}]")
    if args.fraction:
        overrides.append(f"eval.finetune.fractions=[{args.fraction}]")
    with run_lock(args.run_dir):
        results = evaluate_run(
            args.run_dir,
            protocols=split(args.protocol),
            datasets=split(args.dataset),
            overrides=overrides,
        )
    print(init_table(results["evals"]))
    _print_verdict(results["evals"])
    return 0


def _print_verdict(records: list[dict]) -> None:

    lines = baseline_verdict(records)
    if lines:
        print("\nagainst the baselines (top-1, points):")
        print("\n".join(f"  {line}" for line in lines))


def _export(args: argparse.Namespace) -> int:
    suffix = "safetensors" if args.format == "safetensors" else "pt"
    out = args.out or args.run_dir / "export" / f"backbone.{suffix}"
    with run_lock(args.run_dir, enabled=writes_into(args.run_dir, out)):
        n = _write_export(args.run_dir, out, args.format)
    print(f"wrote {out} ({n} tensors); start a run from it with backbone.weights={out}")
    return 0


def _write_export(run_dir: Path, out: Path, fmt: str) -> int:
    """The run's backbone weights and what a user needs to load them, into ``out``; returns
    the number of tensors."""
    cfg = load_run_config(run_dir)
    state = backbone_state(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])
    meta = {
        "format": "selfsup-backbone-v1",
        "method": cfg.method.name,
        "backbone": dataclasses.asdict(cfg.backbone),
        "image_size": cfg.views.size,
        "mean": cfg.data.mean,
        "std": cfg.data.std,
    }
    export_backbone(state, out, fmt, meta)
    return len(state)


def _table(args: argparse.Namespace) -> int:

    runs = []
    for run_dir in args.run_dirs:
        results = read_results(run_dir)
        if results is None:
            raise SelfsupError(f"{run_dir} has no results.json (is it a finished run directory?)")
        runs.append((str(run_dir), results))
    if args.merge_seeds:
        keys = []
        for run_dir in args.run_dirs:
            path = run_dir / "config.yaml"
            saved = yaml.safe_load(path.read_text()) if path.is_file() else {"run": str(run_dir)}
            saved.pop("seed", None)
            keys.append(json.dumps(saved, sort_keys=True, default=str))
        runs = merge_seed_runs([(n, r, k) for (n, r), k in zip(runs, keys, strict=True)])
    print(comparison_table(runs, fmt=args.format, metric=args.metric))
    if args.plot_compute:
        plot_accuracy_vs_compute(runs, args.plot_compute, x=args.compute_axis, metric=args.metric)
    if args.paired:
        print("\n".join(["", "Paired tests against the first run:", *paired_tests(runs)]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse binds the (empty) overrides at the first positional, so key=value pairs after an
    # option (selfsup eval RUN --protocol knn eval.x=1) arrive here: they are overrides too
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        if getattr(args, "handler", None) is not None:  # subcommands of the cli_* modules
            return args.handler(args)
        if args.command in ("pretrain", "supervised", "joint"):
            init_from_env()  # under torchrun: join the process group (DDP)
            return _pretrain(args)
        if args.command == "table":
            return _table(args)
        if args.command == "export":
            return _export(args)
        if args.command == "prepare":
            return cli_prepare.run(args)
        if args.command == "viz":
            return _viz(args)
        if args.command == "faces":
            return cli_faces.run(args)
        if args.command == "study":
            return cli_study.run_study(args)
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
