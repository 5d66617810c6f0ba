"""What a study writes once its cells have run: ``table.md``, ``table.csv``, the figures and
``report.html`` (``selfsup study``, :mod:`selfsup.cli.study`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfsup.atomic import write_text_atomic
from selfsup.evaluate.table import paired_tests
from selfsup.rundir import read_results
from selfsup.studies import figures
from selfsup.studies.runner import cell_file
from selfsup.studies.spec import Cell, Study
from selfsup.studies.table import build_rows, caption, markdown, to_csv


def write_outputs(
    study: Study,
    cells: list[Cell],
    state: dict[str, Any],
    out: Path,
    mapping: dict[str, str],
    params: dict[str, str],
) -> str:
    """table.md, table.csv, the figures and report.html from the finished cells; returns the
    markdown table."""
    cell_states = state["cells"]
    done = {
        c.id: json.loads(cell_file(out, c).read_text())
        for c in cells
        if cell_states[c.id]["state"] == "finished"
    }
    rows = build_rows(study, cells, done, out / "runs", mapping)
    failed = {
        cid: f"{e['state']}: {e.get('error', '')}"
        for cid, e in cell_states.items()
        if e["state"] != "finished"
    }
    table_md = markdown(rows, caption(study, state["scale"], mapping, params), failed)
    if study.paired:
        table_md += _paired_section(study, out)
    write_text_atomic(out / "table.md", table_md)
    write_text_atomic(out / "table.csv", to_csv(rows))
    made = figures.draw(study, rows, out, out / "runs")
    reports = figures.run_reports(study, out / "runs")
    if reports:
        figures.study_html(f"Study {study.name}", table_md, made, reports, out)
    for name, where in made.items():
        print(f"figure {name}: {where}")
    return table_md


def _paired_section(study: Study, out: Path) -> str:
    runs = [(r.name, read_results(out / "runs" / r.name)) for r in study.runs]
    found = [(name, res) for name, res in runs if res is not None]
    lines = "\n".join(paired_tests(found))
    return f"\nPaired tests against the first run (exact McNemar):\n\n{lines}\n"
