"""A study's results table: one row per run x evaluation (x each measurement inside it: k,
label fraction, pseudo-label ratio), as Markdown and CSV.

Columns: the top-1 (%) of the pretrained (or trained) backbone with its macro-F1, of the
random-init twin and of the raw pixels when the evaluation made them, the number the study
cites (its source as a footnote), the cells' wall times, and, where the run's ``results.json``
has a ``"compute"`` section, parameters, FLOPs per image, images per second and hardware (blank
otherwise).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from selfsup.rundir import read_results
from selfsup.studies.spec import OWN, Cell, Study

COLUMNS = [
    "run",
    "evaluation",
    "dataset",
    "protocol",
    "measure",
    "top1",
    "f1",
    "random_top1",
    "pixels_top1",
    "reference_top1",
    "train_s",
    "eval_s",
    "params",
    "flops_per_image",
    "images_per_s",
    "hardware",
]
HEADERS = {
    "top1": "top-1 %",
    "f1": "macro-F1 %",
    "random_top1": "random init %",
    "pixels_top1": "raw pixels %",
    "reference_top1": "published %",
    "train_s": "train wall",
    "eval_s": "eval wall",
    "flops_per_image": "FLOPs/image",
    "images_per_s": "images/s",
}
MAIN_INITS = ("pretrained", "trained")
COMPUTE = ("params", "flops_per_image", "images_per_s", "hardware")  # of results.json["compute"]


def measure(rec: dict[str, Any]) -> str:
    """What distinguishes measurements of one protocol: k, label fraction, ratio (the
    evaluated backbone, DINO's EMA teacher or student, is added per row)."""
    parts = []
    if rec.get("k") is not None:
        parts.append(f"k={rec['k']}")
    if rec.get("fraction") is not None:
        parts.append(f"{100 * rec['fraction']:g}% labels")
    if rec.get("ratio") is not None:
        parts.append(f"ratio 1:{rec['ratio']:g}")
    if rec.get("n_pairs") is not None:
        parts.append(f"{rec['n_pairs']:,} pairs")
    return ", ".join(parts)


def _by_backbone(by_init: dict[str, list[dict]]) -> dict[bool, list[dict]]:
    """The pretrained / trained records split by whether an EMA teacher made them (the
    random-init and pixel records have no teacher and serve both rows)."""
    main = [r for i in MAIN_INITS for r in by_init.get(i, [])]
    out: dict[bool, list[dict]] = defaultdict(list)
    for rec in main:
        out[rec.get("backbone") == "teacher"].append(rec)
    return out or {False: []}


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _matches(ref: dict[str, Any], row: dict[str, Any], recs: list[dict]) -> bool:
    if ref["run"] != row["run"] or ref["eval"] != row["evaluation"]:
        return False
    if "dataset" in ref and ref["dataset"] != row["source_dataset"]:
        return False
    if "protocol" in ref and ref["protocol"] != row["protocol"]:
        return False
    return all(ref[k] == recs[0].get(k) for k in ("k", "fraction", "ratio") if k in ref)


def _row(
    cell: Cell,
    seconds: tuple[float | None, float | None],
    compute: dict[str, Any],
    source: str,
    key: tuple[str, str, str],
    main: list[dict],
    by_init: dict[str, list[dict]],
) -> dict[str, Any]:
    def top1(init: str) -> float | None:
        return _mean([r["top1"] for r in by_init.get(init, [])])

    dataset, protocol, what = key
    row = {
        "run": cell.run,
        "evaluation": cell.eval,
        "dataset": dataset,
        "source_dataset": source,
        "protocol": protocol,
        "measure": what,
        "top1": _mean([r["top1"] for r in main]),
        "f1": _mean([r["f1_macro"] for r in main if "f1_macro" in r]),
        "random_top1": top1("random"),
        "pixels_top1": top1("pixels"),
        "seeds": len(main),
        "train_s": seconds[0],
        "eval_s": seconds[1],
        "reference_top1": None,
        "reference": None,
        **{k: compute.get(k) for k in COMPUTE},
    }
    if isinstance(row["params"], dict):  # results.json: {backbone, total, trainable}
        row["params"] = row["params"].get("backbone")
    if isinstance(row["hardware"], dict):  # {device, gpu, cpu, cpu_count, torch}
        hw = row["hardware"]
        row["hardware"] = f"{hw.get('device')} ({hw.get('cpu_count')} CPUs)"
    kept = [r["n_pseudo"] for r in main if r.get("n_pseudo") is not None]
    if kept:  # pseudo-labelling: the pool images kept above the threshold
        row["measure"] = f"{what}, {sum(kept) / len(kept):.0f} kept".lstrip(", ")
    if compute.get("train_wall_s") is not None:
        row["train_s"] = compute["train_wall_s"]
    return row


def build_rows(
    study: Study, cells: list[Cell], done: dict[str, dict], runs_dir: Path, mapping: dict[str, str]
) -> list[dict[str, Any]]:
    """The table's rows from the finished cells' records (mean over evaluation seeds)."""
    back = {new: old for old, new in mapping.items()}
    rows = []
    for cell in cells:
        if cell.eval is None or cell.id not in done:
            continue
        compute = (read_results(runs_dir / cell.run) or {}).get("compute") or {}
        groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for rec in done[cell.id]["records"]:
            key = (rec["dataset"], rec["protocol"], measure(rec))
            groups[key][rec.get("init", "pretrained")].append(rec)
        seconds = (
            done.get(f"{cell.run}/train", {}).get("wall_s"),
            done[cell.id].get("wall_s") if cell.eval != OWN else None,
        )
        for (dataset, protocol, what), by_init in groups.items():
            for teacher, main in _by_backbone(by_init).items():
                label = ", ".join(filter(None, [what, "EMA teacher" if teacher else ""]))
                row = _row(
                    cell,
                    seconds,
                    compute,
                    back.get(dataset, dataset),
                    (dataset, protocol, label),
                    main,
                    by_init,
                )
                for ref in study.references:
                    if _matches(ref, row, main or next(iter(by_init.values()))):
                        row["reference_top1"], row["reference"] = ref["top1"], ref["source"]
                rows.append(row)
    return rows


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def _wall(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.0f} s" if x < 600 else f"{x / 60:.0f} min"


def display(row: dict[str, Any], notes: dict[str, int]) -> dict[str, str]:
    ref = ""
    if row["reference_top1"] is not None:
        n = notes.setdefault(row["reference"], len(notes) + 1)
        ref = f"{row['reference_top1']:g} [{n}]"
    return {
        "run": row["run"],
        "evaluation": row["evaluation"],
        "dataset": row["dataset"],
        "protocol": row["protocol"],
        "measure": row["measure"],
        "top1": _pct(row["top1"]),
        "f1": _pct(row["f1"]),
        "random_top1": _pct(row["random_top1"]),
        "pixels_top1": _pct(row["pixels_top1"]),
        "reference_top1": ref,
        "train_s": _wall(row["train_s"]),
        "eval_s": _wall(row["eval_s"]),
        "params": _si(row["params"]),
        "flops_per_image": _si(row["flops_per_image"]),
        "images_per_s": "" if row["images_per_s"] is None else f"{row['images_per_s']:.0f}",
        "hardware": row["hardware"] or "",
    }


def caption(study: Study, scale: str, mapping: dict[str, str], params: dict[str, str]) -> str:
    text = f"Study {study.name}, {scale} scale"
    if mapping:
        text += "; datasets substituted: " + ", ".join(f"{a} → {b}" for a, b in mapping.items())
    if params:
        text += "; parameters: " + ", ".join(f"{k}={v}" for k, v in params.items())
    text += ". Top-1 and F1 on the test split (%), mean over evaluation seeds."
    if study.references and (scale != "full" or mapping):
        text += (
            " Published numbers are for the original datasets and budgets; this scale"
            " checks the pipeline and does not reproduce them."
        )
    return text


def markdown(rows: list[dict[str, Any]], text: str, failed: dict[str, str]) -> str:
    notes: dict[str, int] = {}
    shown = [display(r, notes) for r in rows]
    cols = [c for c in COLUMNS if any(s[c] for s in shown) or c in ("run", "evaluation", "top1")]
    lines = [
        text,
        "",
        "| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(s[c] for c in cols) + " |" for s in shown]
    lines += [""] + [f"[{n}] {src}" for src, n in notes.items()]
    if failed:
        lines += ["", "Cells that did not finish (logs in DIR/logs/):"]
        lines += [f"- {cell}: {why}" for cell, why in failed.items()]
    return "\n".join(lines).rstrip() + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, "reference", "seeds"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()
