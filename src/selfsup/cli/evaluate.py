"""``selfsup eval RUN_DIR`` (evaluate a finished run's backbone) and ``selfsup table RUN_DIR
...`` (compare finished runs in one table).

selfsup eval runs/vicreg --protocol knn,linear --dataset cifar10 data.download=true
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from selfsup.analysis.compute import COMPUTE_AXES
from selfsup.errors import SelfsupError
from selfsup.evaluate.table import METRICS
from selfsup.layout import RunDir


def add_parsers(sub: Any) -> None:
    """``eval`` and ``table`` on the top-level sub-parsers."""
    _add_table(sub)
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
        help="comma-separated datasets (default: the pretraining dataset); one not on disk is "
        "downloaded with data.download=true",
    )
    ev.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    ev.add_argument(
        "--preset",
        help="a published evaluation's settings, e.g. vicreg-linear (docs/evaluation.md cites "
        "each; an unknown name lists them)",
    )
    ev.add_argument("--fraction", default=None, help="label fractions for finetune, e.g. 0.01,0.1")
    ev.add_argument(
        "overrides",
        nargs="*",
        metavar="eval.key=value",
        help="eval settings for this evaluation only, e.g. eval.compare_random=true; and "
        "data.download=true to fetch a missing dataset through torchvision",
    )
    ev.set_defaults(handler=run_eval)


def _add_table(sub: Any) -> None:
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
    tb.set_defaults(handler=run_table)


def run_eval(args: argparse.Namespace) -> int:
    from selfsup.evaluate.presets import preset_overrides
    from selfsup.pipeline import evaluate_run
    from selfsup.run.lock import run_lock

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
    print_results(results)
    return 0


def print_results(results: dict) -> None:
    """A run's results table and, where it has them, its verdicts against the baselines."""
    from selfsup.evaluate.table import baseline_verdict, init_table, main_name

    records, main = results["evals"], main_name(results.get("method"))
    print(init_table(records, main))
    lines = baseline_verdict(records, main=main)
    if lines:
        print("\nagainst the baselines (top-1, points):")
        print("\n".join(f"  {line}" for line in lines))


def run_table(args: argparse.Namespace) -> int:
    from selfsup.evaluate.table import comparison_table, merge_seed_runs, paired_tests
    from selfsup.rundir import read_results

    runs = []
    for run_dir in args.run_dirs:
        results = read_results(run_dir)
        if results is None:
            raise SelfsupError(f"{run_dir} has no results.json (is it a finished run directory?)")
        runs.append((str(run_dir), results))
    if args.merge_seeds:
        keys = [_seedless_config(run_dir) for run_dir in args.run_dirs]
        runs = merge_seed_runs([(n, r, k) for (n, r), k in zip(runs, keys, strict=True)])
    print(comparison_table(runs, fmt=args.format, metric=args.metric))
    if args.plot_compute:
        from selfsup.analysis.compute import plot_accuracy_vs_compute

        plot_accuracy_vs_compute(runs, args.plot_compute, x=args.compute_axis, metric=args.metric)
    if args.paired:
        print("\n".join(["", "Paired tests against the first run:", *paired_tests(runs)]))
    return 0


def _seedless_config(run_dir: Path) -> str:
    """The run's saved config without its seed, as a key: runs that differ only in seed pool."""
    import yaml

    path = RunDir(run_dir).config
    saved = yaml.safe_load(path.read_text()) if path.is_file() else {"run": str(run_dir)}
    saved.pop("seed", None)
    return json.dumps(saved, sort_keys=True, default=str)
