"""``selfsup study FILE --scale quick|full --out DIR``: run a study file's cells, then write
its tables (``table.md``, ``table.csv``), figures and ``report.html`` into DIR."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError
from selfsup.studies.spec import SCALES

HELP = """A study file (studies/*.yaml) lists runs (a config of configs/ plus overrides) and the
evaluations applied to each. Each run and evaluation is a cell, executed in order as its own
`python -m selfsup ...` process; finished cells are kept, so the same command continues a
killed study. --scale quick: small subsets and budgets, minutes on a CPU; full: the original
datasets, backbones and epochs, for a GPU."""


def add_parsers(sub: Any) -> None:
    st = sub.add_parser(
        "study",
        help="run a study file's grid of runs x evaluations into a table",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument(
        "file", type=Path, metavar="FILE", help="study file, e.g. studies/isd_cifar10.yaml"
    )
    st.add_argument(
        "--scale", choices=SCALES, default="quick", help="quick (CPU minutes) or full (GPU)"
    )
    st.add_argument("--out", type=Path, required=True, help="study directory (rerun to continue)")
    st.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="NAME=NAME",
        help="use another dataset in place of one the study names, e.g. "
        "cifar10=fashion-mnist (repeatable; the caption says so)",
    )
    st.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter the study declares, e.g. weights=PATH",
    )
    st.set_defaults(handler=run_study)


def repo_root(study_file: Path) -> Path:
    """Where a study's config paths start: the repository holding ``studies/`` and
    ``configs/``, else the working directory."""
    above = study_file.resolve().parent.parent
    return above if (above / "configs").is_dir() else Path.cwd()


def _check_same_study(out: Path, meta: dict[str, Any]) -> None:
    from selfsup.studies.runner import STATE

    path = out / STATE
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    for key in ("study", "scale", "map", "params"):
        if old.get(key) != meta[key]:
            raise SelfsupError(
                f"{out} holds study {old.get('study')!r} with {key}={old.get(key)!r}, not "
                f"{meta[key]!r}; give another --out (or the same options to continue it)"
            )


def run_study(args: argparse.Namespace) -> int:
    from selfsup.studies.outputs import write_outputs
    from selfsup.studies.plan import parse_pairs, plan, resolve_params
    from selfsup.studies.runner import STATE, run_cells
    from selfsup.studies.spec import load_study

    root = repo_root(args.file)
    study = load_study(args.file, root)
    mapping = parse_pairs(args.map, "--map")
    params = resolve_params(study, parse_pairs(args.param, "--param"))
    out = args.out.resolve()
    cells = plan(study, args.scale, mapping, params, out / "runs", root)
    meta = {
        "study": study.name,
        "file": str(args.file),
        "scale": args.scale,
        "map": mapping,
        "params": params,
        "command": ["selfsup", *sys.argv[1:]],
    }
    _check_same_study(out, meta)
    print(f"study {study.name} ({args.scale}): {len(cells)} cells into {out}")
    state = run_cells(cells, out, meta, root)
    print()
    print(write_outputs(study, cells, state, out, mapping, params))
    print(f"tables: {out / 'table.md'}, {out / 'table.csv'}; cell states: {out / STATE}")
    unfinished = [c for c, e in state["cells"].items() if e["state"] != "finished"]
    if unfinished:
        listed = ", ".join(unfinished)
        print(f"selfsup: {len(unfinished)} cells did not finish: {listed}", file=sys.stderr)
        return 1
    return 0
