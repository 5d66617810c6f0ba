"""A study's figures and its HTML page.

``accuracy_vs_compute``: top-1 of every run on one evaluation against its training wall time
(``results.json["compute"]["train_wall_s"]`` where the run has it, else its training cell's) and
against its parameter count where ``"compute"`` gives it. ``curves``: per-epoch validation
curves of several runs in one figure (``analysis.plots.compare_curves``). ``tsne``: a run's
t-SNE panels over the epochs it saved (``viz.embed_epochs``). Each finished run also gets its
``report.html`` (``analysis.report``), linked from the study's page.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from selfsup.analysis import plots
from selfsup.analysis.embeddings import tsne_panels
from selfsup.analysis.report import write_report
from selfsup.atomic import write_text_atomic
from selfsup.errors import SelfsupError
from selfsup.layout import RunDir
from selfsup.studies.spec import Study


def accuracy_vs_compute(rows: list[dict[str, Any]], evaluation: str | None, out: Path) -> Path:
    rows = [r for r in rows if r["top1"] is not None and (evaluation in (None, r["evaluation"]))]
    if not rows:
        raise SelfsupError(f"no finished rows for evaluation {evaluation!r}")
    with_params = [r for r in rows if r["params"]]
    plt = plots.pyplot()
    fig, axes = plt.subplots(
        1, 2 if with_params else 1, figsize=(11 if with_params else 6, 4.5), squeeze=False
    )
    xs = [r["train_s"] for r in rows]
    axes[0][0].set_xlabel("training wall time (s)")
    axes[0][0].set_xscale("log")
    panels = [(axes[0][0], rows, xs)]
    if with_params:
        axes[0][1].set_xlabel("parameters")
        axes[0][1].set_xscale("log")
        panels.append((axes[0][1], with_params, [r["params"] for r in with_params]))
    for ax, rs, x in panels:
        for r, xv in zip(rs, x, strict=True):
            if xv:
                label = ", ".join(x for x in (f"{r['run']} {r['protocol']}", r["measure"]) if x)
                ax.scatter([xv], [100 * r["top1"]])
                ax.annotate(
                    label,
                    (xv, 100 * r["top1"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.margins(x=0.25)  # room for the labels right of the last points
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"accuracy vs compute ({evaluation or 'every evaluation'})")
    return plots.save_figure(fig, out)


def run_folder(runs_dir: Path, entry: str) -> Path:
    """A figure's ``RUN`` (the run's directory) or ``RUN/GLOB`` (the one folder inside the run
    the pattern matches, e.g. ``isd/evals/*/linear-aug-*``: a trained evaluation's curves)."""
    if "/" not in entry:
        return runs_dir / entry
    found = sorted(p for p in runs_dir.glob(entry) if p.is_dir())
    if len(found) != 1:
        raise ValueError(f"{entry!r} matches {len(found)} folders under {runs_dir}, not one")
    return found[0]


def draw(study: Study, rows: list[dict[str, Any]], out: Path, runs_dir: Path) -> dict[str, str]:
    """Every figure of the study: {name: PNG path relative to ``out``, or a note why not}."""
    made: dict[str, str] = {}
    for i, fig in enumerate(study.figures):
        kind = fig["kind"]
        name = fig.get("out") or f"{kind}-{i}.png"
        try:
            if kind == "accuracy_vs_compute":
                path = accuracy_vs_compute(rows, fig.get("eval"), out / "figures" / name)
            elif kind == "curves":
                path = out / "figures" / name
                keys = fig.get("keys") or ["val_top1", "val_loss"]
                runs = [run_folder(runs_dir, r) for r in fig["runs"]]
                plots.compare_curves(runs, keys, path, labels=fig.get("labels"))
            else:
                path = tsne_panels(runs_dir / fig["run"])
        except (SelfsupError, OSError, KeyError, ValueError) as err:
            made[name] = f"not drawn: {err}"
            continue
        made[name] = str(Path(path).resolve().relative_to(out.resolve()))
    return made


def run_reports(study: Study, runs_dir: Path) -> dict[str, str]:
    """Each finished run's ``report.html`` (``selfsup report``)."""
    out = {}
    for run in study.runs:
        if RunDir(runs_dir / run.name).results.is_file():
            try:
                out[run.name] = str(write_report(runs_dir / run.name))
            except (SelfsupError, OSError) as err:  # one run's report must not stop the study's
                print(f"selfsup: no report for {run.name}: {err}")
    return out


def study_html(
    title: str, table_md: str, figures: dict[str, str], reports: dict[str, str], out: Path
) -> Path:
    """DIR/report.html: the table, the figures inline, links to the runs' reports."""
    parts = [f"<h1>{html.escape(title)}</h1>", f"<pre>{html.escape(table_md)}</pre>"]
    for name, path in figures.items():
        png = out / path
        if path.endswith(".png") and png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<h2>{html.escape(name)}</h2><img src='data:image/png;base64,{data}'>")
        else:
            parts.append(f"<p>{html.escape(name)}: {html.escape(path)}</p>")
    for run, path in reports.items():
        rel = Path(path).resolve().relative_to(out.resolve())
        parts.append(f"<p><a href='{html.escape(str(rel))}'>{html.escape(run)}: run report</a></p>")
    page = "<!doctype html><meta charset='utf-8'><title>{}</title>\n{}\n".format(
        html.escape(title), "\n".join(parts)
    )
    write_text_atomic(RunDir(out).report, page)
    return RunDir(out).report
