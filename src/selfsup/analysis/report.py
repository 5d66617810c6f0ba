"""``RUN_DIR/report.html``: one self-contained page per run (``selfsup report RUN_DIR``).

The page holds the run's results tables (every protocol, the pretrained numbers next to the
random-init and raw-pixel baselines), the retrieval figures (``plots/retrieval.json``), the
collapse monitors of each epoch (``metrics.jsonl``), every PNG under ``plots/`` and the resolved
``config.yaml``. Images are embedded as base64 ``data:`` URIs and the style sheet is inline, so
the file can be mailed or archived alone and opens offline; every piece of text from the run
is escaped (``html.escape``). The page is written atomically.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from selfsup.atomic import write_text_atomic
from selfsup.errors import SelfsupError
from selfsup.evaluate.table import (
    BASELINE_NAMES,
    INIT_ORDER,
    PROTOCOL_ORDER,
    baseline_verdict,
    format_cell,
    init_rows,
    main_name,
)
from selfsup.layout import RunDir

# (glob under plots/, caption): known figures first, in this order; any other PNG follows,
# captioned by its file name
KNOWN_FIGURES: tuple[tuple[str, str], ...] = (
    (
        "curves.png",
        "Training curves: the loss, its parts and the learning rate per step; the "
        "online kNN and collapse monitors per epoch",
    ),
    (
        "train_val.png",
        "Train against validation per epoch: cross-entropy and top-1 on a fixed "
        "training sample and on held-out training images",
    ),
    ("compare_curves.png", "Curves of several runs side by side"),
    (
        "tsne.png",
        "t-SNE of the backbone features of the same training images after each "
        "saved epoch, coloured by class",
    ),
    (
        "retrieval.png",
        "Retrieval: per test query, its most similar (left) and least similar "
        "(right) training images by the pretrained features; green names match the query's class",
    ),
    ("retrieve-*.png", "A query of the run's saved index (selfsup retrieve)"),
    (
        "attention*.png",
        "Attention of the CLS token over the patches in the last block, per head and their mean",
    ),
    (
        "corr*.png",
        "The matrix the method acts on (VICReg: covariance; others: Barlow Twins "
        "cross-correlation of two views) over the saved epochs",
    ),
    ("faces*.png", "Faces: the most and least similar training faces of test queries"),
    ("confusion-*.png", "Confusion matrix"),
)

SMALL_FIGURES = ("confusion-*.png",)  # shown three to a row

PROTOCOL_TITLES = {
    "knn": "kNN",
    "linear": "Linear probe",
    "linear-aug": "Linear probe with augmentation",
    "finetune": "Fine-tuning",
    "pseudo-label": "Semi-supervised (pseudo-labels)",
    "supervised": "Supervised",
    "joint": "Joint SSL + supervised",
}
INIT_NAMES = {"pretrained": "pretrained", **BASELINE_NAMES}
MONITOR_NAMES = {
    "monitor_knn_top1": "kNN top-1 (k=20, held-out fifth)",
    "monitor_feature_std": "feature std (1 = evenly spread)",
    "monitor_effective_rank": "effective rank",
    "monitor_collapse_warning": "collapse warning",
}

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 0 1.2em 3em; color: #1d1d1f; }
h1 { margin-top: 0.8em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; }
.worse { color: #b00020; } .better { color: #0a7a2f; }
small, .note { color: #555; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #333; font-size: 0.92em; }
figure.small { display: inline-block; width: 32%; margin: 0.5em 0.5%; vertical-align: top; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
table.facts td { text-align: left; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (already HTML)."""
    cell = (lambda c: c) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def results_section(results: dict[str, Any] | None) -> str:
    """One table per protocol: rows = measurement, columns = top-1 (macro-F1) of each init,
    and the pretrained top-1 minus the best baseline in points."""
    if not results:
        return '<p class="note">No results.json: the run has not been evaluated yet.</p>'
    if not results.get("evals"):  # not a table of evaluation records (a face study's results)
        text = json.dumps(results, indent=2, default=str)
        return f"<p>results.json (no evaluation records):</p><pre>{esc(text)}</pre>"
    records = results["evals"]
    parts = []
    known = {p: i for i, p in enumerate(PROTOCOL_ORDER)}
    protocols = dict.fromkeys(r["protocol"] for r in records)
    for protocol in sorted(protocols, key=lambda p: known.get(p, len(known))):
        inits, rows = init_rows([r for r in records if r["protocol"] == protocol])
        baselines = [i for i in BASELINE_NAMES if i in inits]
        names = {**INIT_NAMES, "pretrained": main_name(results.get("method"))}
        header = ["evaluation", "seeds", "test images"]
        header += [f"{names.get(i, i)} top-1" for i in inits]
        if "pretrained" in inits and baselines:
            header.append(f"{names['pretrained']} − best baseline")
        body = []
        for label, by_init in rows.items():
            n = max(a["n"] for a in by_init.values())
            n_test = {a.get("n_test") for a in by_init.values()} - {None}
            cells = [esc(label), str(n), ", ".join(f"{t:,}" for t in sorted(n_test)) or "-"]
            for i in inits:
                a = by_init.get(i)
                if a is None or a["top1"] is None:
                    cells.append("-")
                    continue
                top1 = format_cell(a["top1"], a["top1_std"], a["n"])
                f1 = format_cell(a["f1_macro"], a["f1_macro_std"], a["n"])
                ci = a.get("top1_ci95")
                ci_text = f"95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}, " if ci else ""
                cells.append(f"{esc(top1)}% <small>({ci_text}F1 {esc(f1)})</small>")
            if len(header) > len(cells):
                cells.append(_margin(by_init, baselines))
            body.append(cells)
        title = PROTOCOL_TITLES.get(protocol, protocol)
        parts.append(f"<h3>{esc(title)}</h3>" + table(header, body, raw=True))
    verdict = baseline_verdict(records, main=main_name(results.get("method")))
    if verdict:
        items = "".join(f"<li>{esc(line)}</li>" for line in verdict)
        parts.append(f"<p>Against the baselines (top-1, points):</p><ul>{items}</ul>")
    return "".join(parts)


def _margin(by_init: dict[str, dict[str, Any]], baselines: Sequence[str]) -> str:
    mine = by_init.get("pretrained", {}).get("top1")
    bases = [by_init[b]["top1"] for b in baselines if by_init.get(b, {}).get("top1") is not None]
    if mine is None or not bases:
        return "-"
    diff = 100 * (mine - max(bases))
    return f'<span class="{"better" if diff > 0 else "worse"}">{diff:+.1f}</span>'


def retrieval_section(plots: Path) -> str:
    path = plots / "retrieval.json"
    if not path.is_file():
        return '<p class="note">No retrieval figures: run <code>selfsup viz retrieval</code>.</p>'
    res = json.loads(path.read_text())
    k = res.get("k")
    rows = [[name, _percent(p)] for name, p in res.get("precision", {}).items()]
    text = (
        f"<p>{esc(res.get('queries', '?'))} test queries searched among "
        f"{esc(res.get('bank', '?'))} training images by cosine similarity; precision@{esc(k)} "
        "is the share of the retrieved images that have the query's class.</p>"
    )
    text += table(["features", f"precision@{k}"], rows)
    recall = res.get("recall")
    if recall is None:
        text += '<p class="note">Exact search (ANNOY not installed): no recall to report.</p>'
    else:
        text += table(
            ["search", f"recall@{k} against exact search"],
            [["ANNOY (pretrained features)", _percent(recall)]],
        )
    return text


def collapse_section(run_dir: Path) -> str:
    """Per epoch, the online monitors of ``metrics.jsonl`` (kNN, feature std, effective rank)."""
    path = RunDir(run_dir).metrics
    lines = path.read_text().splitlines() if path.is_file() else []
    recs = [json.loads(x) for x in lines if x.strip()]
    epochs = [r for r in recs if any(k.startswith("monitor_") for k in r)]
    if not epochs:
        return (
            '<p class="note">No monitor records: train with eval.monitor_every=1 to log them '
            "each epoch.</p>"
        )
    keys = list(dict.fromkeys(k for r in epochs for k in r if k.startswith("monitor_")))
    rows = []
    for r in epochs:
        cells = [str(r.get("epoch", r.get("epoch_fraction", "?")))]
        for key in keys:
            value = r.get(key)
            if isinstance(value, bool):
                cells.append("yes" if value else "no")
            elif key == "monitor_knn_top1" and value is not None:
                cells.append(_percent(value))
            else:
                cells.append("-" if value is None else f"{value:.3g}")
        rows.append(cells)
    header = ["epoch", *(MONITOR_NAMES.get(k, k.removeprefix("monitor_")) for k in keys)]
    return table(header, rows)


def discover_figures(plots: Path) -> list[tuple[Path, str]]:
    """Every PNG under ``plots/`` with its caption: the ``KNOWN_FIGURES`` first in their
    order, then the others by name, captioned by their file name."""
    found = sorted(plots.rglob("*.png")) if plots.is_dir() else []
    out: list[tuple[Path, str]] = []
    for pattern, caption in KNOWN_FIGURES:
        for path in sorted(found, key=_init_last):
            if fnmatch.fnmatch(path.name, pattern) and all(path != p for p, _ in out):
                detail = path.relative_to(plots).as_posix()
                out.append((path, caption if "*" not in pattern else f"{caption}: {detail}"))
    seen = {p for p, _ in out}
    out += [(p, p.relative_to(plots).as_posix()) for p in found if p not in seen]
    return out


def _init_last(path: Path) -> tuple[str, int]:
    """Sort key that puts the figures of one measurement together, pretrained, random init,
    raw pixels in turn: ``confusion-knn-ds-pretrained-k20-s0.png`` as ("confusion-knn-ds--k20
    -s0.png", 0)."""
    for rank, init in enumerate(INIT_ORDER):
        if f"-{init}-" in path.name:
            return str(path.with_name(path.name.replace(f"-{init}-", "--"))), rank
    return str(path), -1


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figures_section(figures: Sequence[tuple[Path, str]], plots: Path) -> str:
    if not figures:
        return '<p class="note">No figures under plots/.</p>'
    parts = []
    for path, caption in figures:
        name = path.relative_to(plots).as_posix()
        small = any(fnmatch.fnmatch(path.name, p) for p in SMALL_FIGURES)
        cls = ' class="small"' if small else ""
        parts.append(
            f'<figure id="fig-{slug(name)}"{cls}><img src="{data_uri(path)}" alt="{esc(name)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    return "".join(parts)


def run_summary(run_dir: Path, results: dict[str, Any] | None) -> str:
    env_path = RunDir(run_dir).env
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    facts = [
        ("method", (results or {}).get("method")),
        ("backbone", (results or {}).get("backbone")),
        ("pretraining data", (results or {}).get("pretrain_dataset")),
        ("selfsup", env.get("selfsup")),
        ("git commit", env.get("git_sha")),
        ("torch", env.get("torch")),
        ("device", env.get("device")),
    ]
    facts += budget_facts(run_dir, (results or {}).get("compute"))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts if v)
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def budget_facts(run_dir: Path, compute: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The run's budget and cost, from config.yaml and results.json's ``compute``: epochs,
    steps, images, wall time, images/s, parameters, FLOPs."""
    cfg = yaml.safe_load(RunDir(run_dir).config.read_text()) or {}
    train, data = cfg.get("train") or {}, cfg.get("data") or {}
    c = compute or {}
    out = []
    if train.get("epochs") is not None:
        budget = f"{train['epochs']} epochs, batch {train.get('batch_size')}"
        if c.get("steps") is not None:
            budget += f", {c['steps']:,} steps, {c.get('images_seen', 0):,} images seen"
        if data.get("limit") is not None:
            budget += f" (data.limit={data['limit']:,})"
        out.append(("training budget", budget))
    if c.get("train_wall_s") is not None:
        rate = f", {c['images_per_s']:,.0f} images/s" if c.get("images_per_s") else ""
        out.append(("training time", f"{_duration(c['train_wall_s'])}{rate}"))
    params = c.get("params") or {}
    if params.get("total") is not None:
        what = f"{params['total']:,} in all, {params.get('backbone', 0):,} in the backbone"
        out.append(("parameters", what))
    if c.get("flops_per_image") is not None:
        flops = f"{c['flops_per_image'] / 1e6:,.1f} MFLOPs a forward pass of one image"
        if c.get("train_flops") is not None:
            flops += f"; {c['train_flops'] / 1e12:,.3g} TFLOPs of training"
        out.append(("compute", flops))
    return out


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def build_report(run_dir: str | Path) -> str:
    """The HTML text of the run's report."""
    run_dir = Path(run_dir)
    config = RunDir(run_dir).config
    if not config.is_file():
        raise SelfsupError(f"cannot report on {run_dir}: it holds no run (no config.yaml)")
    results_path = RunDir(run_dir).results
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    plots = RunDir(run_dir).plots
    figures = discover_figures(plots)
    sections = [
        ("Run", run_summary(run_dir, results)),
        ("Results", results_section(results)),
        ("Retrieval", retrieval_section(plots)),
        ("Collapse monitors", collapse_section(run_dir)),
        ("Figures", figures_section(figures, plots)),
        ("Config", f"<pre>{esc(config.read_text())}</pre>"),
    ]
    index = []
    for title, _ in sections:
        index.append(f'<li><a href="#{slug(title)}">{esc(title)}</a>')
        if title == "Figures" and figures:
            subs = "".join(
                f'<li><a href="#fig-{slug(p.relative_to(plots).as_posix())}">'
                f"{esc(p.relative_to(plots).as_posix())}</a></li>"
                for p, _ in figures
            )
            index[-1] += f"<ul>{subs}</ul>"
        index[-1] += "</li>"
    body = "".join(f'<h2 id="{slug(t)}">{esc(t)}</h2>{content}' for t, content in sections)
    title = f"selfsup report: {run_dir.resolve().name}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{esc(title)}</h1><nav><h2 id="index">Index</h2><ul>{"".join(index)}</ul></nav>'
        f"{body}</body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) atomically; returns its path."""
    path = Path(out) if out is not None else RunDir(run_dir).report
    write_text_atomic(path, build_report(run_dir))
    return path
