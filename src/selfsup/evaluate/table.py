"""Plain-text tables of evaluation records."""

from __future__ import annotations

from typing import Any


def record_label(rec: dict[str, Any]) -> str:
    label = f"{rec['protocol']}"
    if "k" in rec:
        label += f" (k={rec['k']})"
    if rec.get("fraction") is not None:
        label += f" {rec['fraction']:.0%}"
    return f"{label} on {rec['dataset']}"


def init_table(records: list[dict[str, Any]]) -> str:
    """Rows: protocol x dataset; columns: top-1 / macro-F1 for each init (pretrained, random)."""
    inits = list(dict.fromkeys(r.get("init", "pretrained") for r in records))
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in records:
        rows.setdefault(record_label(rec), {})[rec.get("init", "pretrained")] = rec
    header = ["evaluation"] + [f"{i} top-1 / F1" for i in inits]
    lines = [header]
    for label, by_init in rows.items():
        cells = [label]
        for i in inits:
            r = by_init.get(i)
            cells.append(f"{100 * r['top1']:.1f}% / {100 * r['f1_macro']:.1f}" if r else "-")
        lines.append(cells)
    widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
    fmt = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in lines
    ]
    fmt.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(fmt)
