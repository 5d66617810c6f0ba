"""``selfsup study FILE --scale quick|full --out DIR``: run a study file's cells, then write
its tables (``table.md``, ``table.csv``), figures and ``report.html`` into DIR."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from selfsup.atomic import write_text_atomic
from selfsup.errors import SelfsupError
from selfsup.evaluate.table import paired_tests
from selfsup.rundir import read_results
from selfsup.studies import figures
from selfsup.studies.plan import parse_pairs, plan, resolve_params
from selfsup.studies.runner import STATE, cell_file, run_cells
from selfsup.studies.spec import SCALES, Cell, Study, load_study
from selfsup.studies.table import build_rows, caption, markdown, to_csv

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
    st.add_argument("--map", action="append", default=[], metavar="NAME=NAME",
                    help="use another dataset in place of one the study names, e.g. "
                    "cifar10=fashion-mnist (repeatable; the caption says so)")  # fmt: skip
    st.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a parameter the study declares, e.g. weights=PATH")  # fmt: skip


def repo_root(study_file: Path) -> Path:
    """Where a study's config paths start: the repository holding ``studies/`` and
    ``configs/``, else the working directory."""
    above = study_file.resolve().parent.parent
    return above if (above / "configs").is_dir() else Path.cwd()


def _check_same_study(out: Path, meta: dict[str, Any]) -> None:
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


def write_outputs(study: Study, cells: list[Cell], state: dict[str, Any], out: Path,
                  mapping: dict[str, str], params: dict[str, str]) -> str:  # fmt: skip
    """table.md, table.csv, the figures and report.html from the finished cells."""
    done = {c.id: json.loads(cell_file(out, c).read_text()) for c in cells
            if state["cells"][c.id]["state"] == "finished"}  # fmt: skip
    rows = build_rows(study, cells, done, out / "runs", mapping)
    failed = {cid: f"{e['state']}: {e.get('error', '')}" for cid, e in state["cells"].items()
              if e["state"] != "finished"}  # fmt: skip
    text = caption(study, state["scale"], mapping, params)
    table_md = markdown(rows, text, failed)
    if study.paired:
        runs = [(r.name, read_results(out / "runs" / r.name)) for r in study.runs]
        runs = [(name, res) for name, res in runs if res is not None]
        table_md += "\nPaired tests against the first run (exact McNemar):\n\n"
        table_md += "\n".join(paired_tests(runs)) + "\n"
    write_text_atomic(out / "table.md", table_md)
    write_text_atomic(out / "table.csv", to_csv(rows))
    made = figures.draw(study, rows, out, out / "runs")
    reports = figures.run_reports(study, out / "runs")
    if reports:
        figures.study_html(f"Study {study.name}", table_md, made, reports, out)
    for name, where in made.items():
        print(f"figure {name}: {where}")
    return table_md


def run_study(args: argparse.Namespace) -> int:
    root = repo_root(args.file)
    study = load_study(args.file, root)
    mapping = parse_pairs(args.map, "--map")
    params = resolve_params(study, parse_pairs(args.param, "--param"))
    out = args.out.resolve()
    cells = plan(study, args.scale, mapping, params, out / "runs", root)
    meta = {"study": study.name, "file": str(args.file), "scale": args.scale, "map": mapping,
            "params": params, "command": ["selfsup", *sys.argv[1:]]}  # fmt: skip
    _check_same_study(out, meta)
    print(f"study {study.name} ({args.scale}): {len(cells)} cells into {out}")
    state = run_cells(cells, out, meta, root)
    print()
    print(write_outputs(study, cells, state, out, mapping, params))
    print(f"tables: {out / 'table.md'}, {out / 'table.csv'}; cell states: {out / STATE}")
    unfinished = [c for c, e in state["cells"].items() if e["state"] != "finished"]
    if unfinished:
        print(f"selfsup: {len(unfinished)} cells did not finish: {', '.join(unfinished)}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0
