"""Tables of evaluation records: seeds aggregated to mean ± std, one run's pretrained-vs-random
table, and a comparison of several runs side by side (markdown or CSV).

A record (one entry of ``results.json["evals"]``) is one measurement on one seed. Records that
differ only by ``seed`` (and by what a protocol chose on each seed, such as a weight decay) are
repetitions of the same measurement, identified by ``IDENTITY``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from selfsup.records import IDENTITY, measurement_key

# the eval settings that change each protocol's number (besides the record's own fields)
COMMON_SETTINGS = ("train_limit", "test_limit", "classes")
# the linear probes' ViT feature (DINO eval_linear.py's last CLS tokens): recorded for a ViT run
# only (every init of it, so its baselines share the row), a ResNet's probe never reads them
VIT_PROBE = ("vit_last_blocks", "vit_avgpool")
_TRAINED = ("val_fraction", "min_steps")
_FINETUNE = (
    "finetune.epochs",
    "finetune.batch_size",
    "finetune.lrs",
    "finetune.weight_decay",
    "finetune.head_lr_scale",
    "crop_scale",
    *_TRAINED,
)
PROTOCOL_SETTINGS: dict[str, tuple[str, ...]] = {
    "knn": ("knn.temperature",),
    "linear": ("linear.l2", "linear.max_iter", "val_fraction", *VIT_PROBE),
    "linear-aug": (
        "linear_aug.epochs",
        "finetune.batch_size",
        "linear_aug.lrs",
        "linear_aug.weight_decay",
        "crop_scale",
        *_TRAINED,
        *VIT_PROBE,
    ),
    "finetune": _FINETUNE,
    "pseudo-label": (
        *_FINETUNE,
        "pseudo.pool",
        "pseudo.pool_split",
        "pseudo.fraction",
        "pseudo.threshold",
        "pseudo.teacher",
        "pseudo.steps",
        "linear.l2",
        "linear.max_iter",
        *VIT_PROBE,
    ),
}


# settings added after records existed: left out at these values (the behaviour before them),
# so earlier records keep their settings ids
LATER_SETTINGS: dict[str, tuple[Any, ...]] = {
    "classes": (None,),
    "pseudo.pool": ("fraction",),
    "pseudo.steps": ("epochs",),
    "vit_last_blocks": (1,),  # the final CLS token alone
    "vit_avgpool": (False,),
}
# values that mean what an earlier value meant, recorded as that one (same settings id)
SAME_AS_BEFORE: dict[str, dict[Any, Any]] = {"pseudo.teacher": {"pretrained": None}}


def eval_settings(
    protocol: str, cfg: Any, *, vit: bool = False, center_crop: float = 1.0
) -> dict[str, Any]:
    """The settings of ``cfg`` (an ``EvalConfig``) that change ``protocol``'s number; ``vit``:
    the run's backbone is a ViT (``backbones.config.is_vit``), whose probes read
    ``VIT_PROBE``; ``center_crop``: the evaluation view's (``data.views.eval_center_crop`` of
    the view size), recorded as ``eval_center_crop`` where it is not the whole image."""
    names = COMMON_SETTINGS + PROTOCOL_SETTINGS.get(protocol, ())
    pool = getattr(getattr(cfg, "pseudo", None), "pool", "fraction")
    skip = {"pseudo.pool_split"} if pool == "fraction" else {"pseudo.fraction"}
    skip |= set() if vit else set(VIT_PROBE)
    out = {}
    for name in names:  # dotted: "knn.temperature" is cfg.knn.temperature
        node: Any = cfg
        for part in name.split("."):
            node = getattr(node, part, _MISSING)
        if node is not _MISSING and name not in skip and node not in LATER_SETTINGS.get(name, ()):
            out[name] = SAME_AS_BEFORE[name].get(node, node) if name in SAME_AS_BEFORE else node
    if center_crop != 1.0:  # ImageNet-size views: Resize(size / crop) + CenterCrop(size)
        out["eval_center_crop"] = center_crop
    return out


_MISSING = object()


def settings_id(settings: dict[str, Any]) -> str:
    """A short stable hash of a record's settings: records that differ in any setting that
    changes the number (lr, epochs, temperature, teacher, limits, crop scale...) get different
    ids, so they are never averaged together or replace each other."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


METRICS = ("top1", "top5", "balanced_acc", "f1_macro")
PROTOCOL_ORDER = ("knn", "linear", "linear-aug", "finetune", "pseudo-label", "supervised", "joint")
INIT_ORDER = ("pretrained", "trained", "random", "pixels")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else None  # sample std, ddof=1
    return statistics.fmean(values), std


def aggregate(
    records: Iterable[dict[str, Any]], metrics: Sequence[str] = METRICS
) -> list[dict[str, Any]]:
    """Group records by ``measurement_key`` (first-appearance order) and summarise each group.

    Each result holds the identity fields present in the records, ``n`` (number of records,
    i.e. seeds), ``seeds`` (sorted), and for each metric ``m``: ``m`` = mean over the seeds and
    ``m_std`` = sample standard deviation (ddof=1; None for a single seed). A metric missing
    or None on some seeds is averaged over the seeds that have it; None when none has it.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(measurement_key(rec), []).append(rec)
    out = []
    for key, recs in groups.items():
        row: dict[str, Any] = {
            f: v for f, v in zip(IDENTITY, key, strict=True) if v is not None or f == "init"
        }
        steps = {r.get("steps") for r in recs}
        if len(steps) == 1 and None not in steps:  # the training budget, shown with the label
            row["steps"] = steps.pop()
        if recs[0].get("settings") is not None:  # one settings_id: the same settings
            row["settings"] = recs[0]["settings"]
        row["n"] = len(recs)
        row["seeds"] = sorted((r["seed"] for r in recs if r.get("seed") is not None), key=str)
        n_test = {r.get("n_test") for r in recs}
        if len(n_test) == 1 and None not in n_test:  # how many test images each score counts
            row["n_test"] = n_test.pop()
        asked = {tuple(r["k_requested"]) for r in recs if r.get("k_requested")}
        if asked:  # a k larger than the bank: every bank image voted
            row["k_requested"] = sorted({k for ks in asked for k in ks})
        if len(recs) == 1 and recs[0].get("top1_ci95"):  # one seed: the 95% Wilson interval
            row["top1_ci95"] = recs[0]["top1_ci95"]
        for m in metrics:
            vals = [float(r[m]) for r in recs if r.get(m) is not None]
            row[m], row[f"{m}_std"] = _mean_std(vals)
        out.append(row)
    return out


def _percent(x: float) -> str:
    return f"{100 * x:g}%"


def _measure(rec: dict[str, Any], steps: bool = True) -> str:
    """The protocol and its settings, without init or dataset: "knn k=20", "finetune 1%",
    "pseudo-label 1:0.4" (and "pseudo-label 1% 1:0.4" with ``fraction`` shown)."""
    label = str(rec["protocol"])
    if rec.get("k") is not None:
        label += f" k={rec['k']}"
        if rec.get("k_requested"):  # e.g. k=200 asked of a 178-image bank: all of them voted
            asked = ", ".join(str(k) for k in rec["k_requested"])
            label += f" (asked {asked}: the whole bank)"
    if rec.get("fraction") is not None and rec.get("ratio") is None:
        label += f" {_percent(rec['fraction'])}"
    if rec.get("ratio") is not None:
        label += f" 1:{rec['ratio']:g}"
    if rec.get("threshold") is not None:
        label += f" >={rec['threshold']:g}"
    if rec.get("ema_teacher") or rec.get("backbone") == "teacher":
        label += " [teacher]"
    if steps and rec.get("steps") is not None:  # trained evaluations: the budget
        label += f" ({rec['steps']} steps)"
    return label


def column_label(rec: dict[str, Any], *, dataset: bool = False, verbose: bool = False) -> str:
    """A short column name for a record or aggregate: "knn k=20", "linear",
    "finetune 1% (pretrained)", "finetune 10% (random)", "pseudo-label 1:0.4", "supervised".

    The init is shown for finetune always and for other protocols when it is not "pretrained"
    (supervised and joint training own their init, so it is left out). ``dataset`` appends
    " on <dataset>"; ``verbose`` shows every identity field (for disambiguation).
    """
    label = _measure(rec)
    if verbose and rec.get("ratio") is not None and rec.get("fraction") is not None:
        label = label.replace(" 1:", f" {_percent(rec['fraction'])} 1:", 1)
    init = rec.get("init", "pretrained")
    show_init = rec["protocol"] == "finetune" or (
        init != "pretrained" and rec["protocol"] not in ("supervised", "joint")
    )
    if show_init or verbose:
        label += f" ({init})"
    if dataset or verbose:
        label += f" on {rec['dataset']}"
    return label


def record_label(rec: dict[str, Any]) -> str:
    """Row name of ``init_table``: the measurement without its init, e.g. "knn k=20 on cifar10"
    (and " [settings <id>]" where ``_disambiguate`` finds two settings under one name)."""
    return f"{_measure(rec, steps=False)} on {rec['dataset']}"


def _row_labels(aggs: list[dict[str, Any]]) -> list[str]:
    """``record_label`` of each aggregate, with its settings id appended where one label would
    otherwise cover measurements made with different settings."""
    base = [record_label(a) for a in aggs]
    ids: dict[str, set[Any]] = {}
    steps: dict[str, set[int]] = {}
    for label, a in zip(base, aggs, strict=True):
        ids.setdefault(label, set()).add(a.get("settings_id"))
        if a.get("steps") is not None:
            steps.setdefault(label, set()).add(a["steps"])
    groups: dict[str, list[dict[str, Any]]] = {}
    for label, a in zip(base, aggs, strict=True):
        groups.setdefault(label, []).append(a)
    out = []
    for label, a in zip(base, aggs, strict=True):
        if len(ids[label]) > 1:
            label = f"{label} {settings_tag(a, groups[label])}"
        elif label in steps:  # the budget of the row's trained evaluations (a range where the
            lo, hi = min(steps[label]), max(steps[label])  # data size differs by init)
            label += f" ({lo} steps)" if lo == hi else f" ({lo}-{hi} steps)"
        out.append(label)
    return out


def _rank(value: Any, order: Sequence[Any]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), str(value))


def _column_sort_key(key: tuple[Any, ...], datasets: list[str]) -> tuple[Any, ...]:
    protocol, dataset, init, _settings, k, fraction, ratio, threshold, _ema_teacher = key
    num = [v if v is not None else -1.0 for v in (k, fraction, threshold, ratio)]
    return (datasets.index(dataset), _rank(protocol, PROTOCOL_ORDER), *num, _rank(init, INIT_ORDER))


def format_cell(mean: float | None, std: float | None, n: int) -> str:
    """ "91.2 ± 0.3" in percent (one decimal), "91.2" for a single seed, "-" when missing. A
    figure identical on every seed (kNN over evaluation seeds: it is deterministic) is shown
    without "± 0.0", which would claim a spread that was never measured."""
    if mean is None:
        return "-"
    if n > 1 and std:
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{100 * mean:.1f}"


def markdown(rows: list[list[str]]) -> str:
    """A padded markdown pipe table; ``rows[0]`` is the header."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def init_rows(
    records: list[dict[str, Any]],
) -> tuple[list[str], dict[str, dict[str, dict[str, Any]]]]:
    """The inits of ``records`` in column order (pretrained, random, pixels, others) and the
    seed aggregates by row label (measurement x dataset) and init: the cells of ``init_table``
    and of the HTML report."""
    aggs = aggregate(records)
    inits = sorted(dict.fromkeys(a["init"] for a in aggs), key=lambda i: _rank(i, INIT_ORDER))
    rows, _ = _rows_with_baselines(records, aggs)
    return inits, rows


_TEACHER = IDENTITY.index("ema_teacher")
_INIT = IDENTITY.index("init")


def _rows_with_baselines(
    records: list[dict[str, Any]], aggs: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, tuple[Any, ...]]]:
    """The aggregates by row label and init, and each row's measurement key (its pretrained
    one). A baseline (random init, raw pixels) has no teacher: an EMA teacher's row shows the
    baselines of the same measurement's student row, so both are compared with them."""
    keys_of = list(dict.fromkeys(measurement_key(r) for r in records))  # aggregate's order
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    keys: dict[str, tuple[Any, ...]] = {}
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for label, a, key in zip(_row_labels(aggs), aggs, keys_of, strict=True):
        rows.setdefault(label, {})[a["init"]] = a
        by_key[key] = a
        if a["init"] == "pretrained" or label not in keys:
            keys[label] = key
    for label, key in keys.items():
        if not key[_TEACHER]:
            continue
        for init in BASELINE_NAMES:
            base = (*key[:_INIT], init, *key[_INIT + 1 : _TEACHER], None, *key[_TEACHER + 1 :])
            if init not in rows[label] and base in by_key:
                rows[label][init] = by_key[base]
    return rows, keys


def main_name(method: str | None) -> str:
    """What a run's own backbone is called beside its baselines: a supervised run's was
    trained with the labels, not pretrained (its records keep init "pretrained", the run's
    own backbone, so that tables across runs line it up with the SSL runs')."""
    return "trained (supervised)" if method == "supervised" else "pretrained"


def init_table(records: list[dict[str, Any]], main: str = "pretrained") -> str:
    """Rows: measurement x dataset; columns: top-1 / macro-F1 (percent) for each init
    (pretrained, random, ...), as mean ± std over seeds when the records repeat over seeds;
    ``main`` names the run's own backbone (:func:`main_name`)."""
    inits, rows = init_rows(records)
    names = {"pretrained": main}
    lines = [["evaluation"] + [f"{names.get(i, i)} top-1 / F1" for i in inits]]
    for label, by_init in rows.items():
        cells = [label]
        for i in inits:
            a = by_init.get(i)
            if a is None:
                cells.append("-")
            else:
                top1 = format_cell(a["top1"], a["top1_std"], a["n"])
                f1 = format_cell(a["f1_macro"], a["f1_macro_std"], a["n"])
                cells.append(f"{top1}% / {f1}")
        lines.append(cells)
    return markdown(lines)


BASELINE_NAMES = {"random": "random init", "pixels": "raw pixels"}


def _paired_p(records: list[dict[str, Any]], key: tuple[Any, ...], a: str, b: str) -> float | None:
    """Exact McNemar p of init ``a`` against init ``b`` on measurement ``key``, where each has
    one record with per-image correctness on the same test images; else None."""
    found = {}
    at = IDENTITY.index("init")
    for init in (a, b):
        want = (*key[:at], init, *key[at + 1 :])
        if init in BASELINE_NAMES:  # a baseline is the same for a teacher and its student
            want = (*want[:_TEACHER], None, *want[_TEACHER + 1 :])
        recs = [r for r in records if measurement_key(r) == want]
        if len(recs) != 1 or not recs[0].get("correct"):
            return None
        found[init] = recs[0]
    ra, rb = found[a], found[b]
    if ra.get("test_id") != rb.get("test_id") or ra["n_test"] != rb["n_test"]:
        return None
    return _mcnemar(ra, rb)["p"]


def _mcnemar(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The exact McNemar test of two records' per-image correctness (the same test images).
    Its module (torch, scipy) is imported here: the table itself needs neither, and the CLI
    reads METRICS from this module to build its parser."""
    from selfsup.evaluate.metrics import mcnemar, unpack_correct

    n = a["n_test"]
    return mcnemar(unpack_correct(a["correct"], n), unpack_correct(b["correct"], n))


def baseline_verdict(
    records: list[dict[str, Any]], alpha: float = 0.05, main: str = "pretrained"
) -> list[str]:
    """One line per measurement that has baselines: the pretrained top-1 against random init
    and raw pixels, in points, with the exact McNemar p of the paired difference where both
    were scored on the same test images, and a plain warning where it does not beat a baseline
    (behind, level, or ahead by less than the test can tell at ``alpha``)."""
    rows, keys = _rows_with_baselines(records, aggregate(records))
    lines = []
    for label, by_init in rows.items():
        mine = by_init.get("pretrained")
        bases = [(i, by_init[i]) for i in BASELINE_NAMES if i in by_init]
        if mine is None or not bases or mine["top1"] is None:
            continue
        parts = [f"{label}: {main} {100 * mine['top1']:.1f}%"]
        behind, unclear = [], []
        for init, base in bases:
            diff = 100 * (mine["top1"] - base["top1"])
            p = _paired_p(records, keys[label], "pretrained", init)
            test = "" if p is None else f", McNemar p={p:.2g}"
            parts.append(f"{BASELINE_NAMES[init]} {100 * base['top1']:.1f}% ({diff:+.1f}{test})")
            if diff <= 0:
                behind.append(BASELINE_NAMES[init])
            elif p is not None and p >= alpha:
                unclear.append(BASELINE_NAMES[init])
        line = ", ".join(parts)
        if behind:
            line += f" -- does NOT beat {' or '.join(behind)} at this budget"
            if main == "pretrained" and mine.get("dataset") == "fashion-mnist":
                # the only dataset whose curves against the pixels were measured (issue #25.8:
                # this was printed for an icon folder and for a supervised run too)
                line += (
                    " (benchmarks/RESULTS.md shows where each Fashion-MNIST recipe stands "
                    "against the pixels as training time grows)"
                )
        elif unclear:
            line += f" -- ahead of {' and '.join(unclear)}, but not significantly (p >= {alpha:g})"
        lines.append(line)
    return lines


def run_labels(runs: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """The method name of each run; "method (dir)" where two runs share a method, and a
    trailing "#i" if even that repeats."""
    methods = [str(res.get("method") or Path(name).name) for name, res in runs]
    labels = [
        f"{m} ({Path(name).name})" if methods.count(m) > 1 else m
        for m, (name, _) in zip(methods, runs, strict=True)
    ]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label} #{seen[label]}")
    return out


def comparison_columns(
    aggregates: Sequence[list[dict[str, Any]]],
) -> tuple[list[tuple[Any, ...]], dict[tuple[Any, ...], str]]:
    """The union of measurements across runs, in a stable order (dataset by first appearance,
    then knn, linear, linear-aug, finetune by fraction then init, pseudo-label by ratio,
    supervised, joint, others), and a unique label for each."""
    examples: dict[tuple[Any, ...], dict[str, Any]] = {}
    for aggs in aggregates:
        for a in aggs:
            examples.setdefault(measurement_key(a), a)
    datasets = list(dict.fromkeys(k[1] for k in examples))
    keys = sorted(examples, key=lambda k: _column_sort_key(k, datasets))
    with_ds = len(datasets) > 1
    labels = {k: column_label(examples[k], dataset=with_ds) for k in keys}
    clashes = {v for v in labels.values() if list(labels.values()).count(v) > 1}
    for k in keys:
        if labels[k] in clashes:
            labels[k] = column_label(examples[k], verbose=True)
    clashes = {v for v in labels.values() if list(labels.values()).count(v) > 1}
    for k in keys:
        if labels[k] in clashes and examples[k].get("settings_id"):
            group = [examples[o] for o in keys if labels[o] == labels[k]]
            labels[k] += f" {settings_tag(examples[k], group)}"
    return keys, labels


def settings_tag(rec: dict[str, Any], group: Sequence[dict[str, Any]]) -> str:
    """What sets ``rec`` apart from the other measurements of ``group`` that share its label:
    the evaluation settings whose values differ, e.g. "[finetune.lrs=[0.1]]" (older records
    without their settings: "[settings <id>]")."""
    mine = rec.get("settings")
    if not isinstance(mine, dict) or not all(isinstance(g.get("settings"), dict) for g in group):
        return f"[settings {rec.get('settings_id')}]"
    keys = sorted({k for g in group for k in g["settings"]})
    differ = [
        k
        for k in keys
        if len({json.dumps(g["settings"].get(k), sort_keys=True) for g in group}) > 1
    ]
    if not differ:
        return f"[settings {rec.get('settings_id')}]"
    return "[" + ", ".join(f"{k}={json.dumps(mine.get(k))}" for k in differ) + "]"


# results.json["compute"] (written by pretraining, selfsup.train.compute) as table columns:
# header, how to read the value, markdown format, csv format
COMPUTE_COLUMNS: tuple[tuple[str, Any, str, str], ...] = (
    ("backbone params (M)", lambda c: c["params"]["backbone"] / 1e6, "{:.2f}", "{:.6g}"),
    ("total params (M)", lambda c: c["params"]["total"] / 1e6, "{:.2f}", "{:.6g}"),
    ("GFLOPs/img", lambda c: c["flops_per_image"] / 1e9, "{:.3g}", "{:.6g}"),
    ("train wall (s)", lambda c: c["train_wall_s"], "{:.4g}", "{:.6g}"),
    ("img/s", lambda c: c["images_per_s"], "{:.0f}", "{:.6g}"),
)


def compute_cells(results: dict[str, Any], fmt: str = "markdown") -> list[str]:
    """The :data:`COMPUTE_COLUMNS` cells of one run: backbone and total parameters in
    millions, backbone GFLOPs per image (one forward), pretraining wall seconds and images per
    second; "-"
    (markdown) or "" (csv) where the run has no such figure."""
    compute = results.get("compute") or {}
    cells = []
    for _, read, md, plain in COMPUTE_COLUMNS:
        try:
            value = read(compute)
        except (KeyError, TypeError):
            value = None
        missing = "-" if fmt == "markdown" else ""
        cells.append(
            missing if value is None else (md if fmt == "markdown" else plain).format(value)
        )
    return cells


def comparison_table(
    runs: Sequence[tuple[str, dict[str, Any]]], fmt: str = "markdown", metric: str = "top1"
) -> str:
    """Runs side by side: one row per run ``(run dir name, results.json dict)``, one column per
    measurement in any run, cells the seed mean ± std of ``metric`` ("top1", "top5",
    "f1_macro").

    ``fmt="markdown"``: cells in percent with one decimal ("91.2 ± 0.3", "91.2" for one seed,
    "-" when the run lacks that measurement). ``fmt="csv"``: header ``run,<col>,<col> std,...``
    with plain fractions (6 significant digits, e.g. 0.9123); empty fields where missing (and
    std for one seed). When any run recorded its pretraining compute, the
    :data:`COMPUTE_COLUMNS` follow the measurements.
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"unknown table format {fmt!r}; valid: 'markdown', 'csv'")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    aggs = [aggregate(res.get("evals", [])) for _, res in runs]
    keys, labels = comparison_columns(aggs)
    names = run_labels(runs)
    by_run = [{measurement_key(a): a for a in run_aggs} for run_aggs in aggs]
    costs = [h for h, *_ in COMPUTE_COLUMNS] if any(r.get("compute") for _, r in runs) else []
    if fmt == "markdown":
        rows = [["run"] + [labels[k] for k in keys] + costs]
        for name, found, (_, res) in zip(names, by_run, runs, strict=True):
            cells = [found.get(k) for k in keys]
            rows.append(
                [name]
                + [format_cell(a[metric], a[f"{metric}_std"], a["n"]) if a else "-" for a in cells]
                + (compute_cells(res) if costs else [])
            )
        return markdown(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run"] + [h for k in keys for h in (labels[k], f"{labels[k]} std")] + costs)
    for name, found, (_, res) in zip(names, by_run, runs, strict=True):
        row: list[Any] = [name]
        for k in keys:
            a = found.get(k) or {}
            row += ["" if a.get(m) is None else f"{a[m]:.6g}" for m in (metric, f"{metric}_std")]
        writer.writerow(row + (compute_cells(res, "csv") if costs else []))
    return buf.getvalue()


def merge_seed_runs(runs: Sequence[tuple[str, dict[str, Any], str]]) -> list[tuple[str, dict]]:
    """Runs ``(name, results, config key)`` whose configs differ only in their seed (equal
    ``config key``) merged into one row: their records pooled, so each cell is the mean ± std
    over pretraining seeds (and evaluation seeds). The row is named after the first run with
    the number of runs merged."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, results, key in runs:
        groups.setdefault(key, []).append((name, results))
    merged = []
    for members in groups.values():
        name, first = members[0]
        if len(members) > 1:
            name = f"{name} (+{len(members) - 1} seeds)"
        evals = [r for _, res in members for r in res.get("evals", [])]
        merged.append((name, {**first, "evals": evals}))
    return merged


def _paired_line(label: str, name_a: str, a: dict, name_b: str, b: dict, alpha: float) -> str:
    """One exact McNemar test of record ``a`` against ``b``, in words."""
    if a.get("test_id") != b.get("test_id") or a["n_test"] != b["n_test"]:
        return f"{label}: different test images, no paired test"
    n = a["n_test"]
    t = _mcnemar(a, b)
    verdict = "significant" if t["p"] < alpha else "not significant"
    return (
        f"{label}: {name_a} {100 * a['top1']:.1f}% vs {name_b} {100 * b['top1']:.1f}%; "
        f"only {name_a} right on {t['b']}, only {name_b} on {t['c']} of {n}: exact McNemar "
        f"p = {t['p']:.2g}, {verdict} at {alpha:g}"
    )


def paired_tests(runs: Sequence[tuple[str, dict[str, Any]]], alpha: float = 0.05) -> list[str]:
    """Exact McNemar tests on the same test images, one line per pair: within each run, the
    pretrained backbone against its random-init and raw-pixel baselines; then every other run
    against the first, per measurement and seed both have. Each line gives the two
    accuracies, the discordant counts, p, and whether the difference is significant at
    ``alpha``. Records without per-image correctness (older results) are skipped."""
    names = run_labels(runs)
    by_run = [
        {(measurement_key(r), r.get("seed")): r for r in res.get("evals", []) if r.get("correct")}
        for _, res in runs
    ]
    lines = []
    for name, found in zip(names, by_run, strict=True):
        for (key, seed), mine in found.items():
            if key[2] != "pretrained":
                continue
            for base in BASELINE_NAMES:
                # baselines have no teacher: pair a teacher's record with the plain baseline
                other = found.get(((*key[:2], base, *key[3:-1], None), seed))
                if other is not None:
                    label = f"{name}: {column_label(mine)} (seed {seed})"
                    lines.append(
                        _paired_line(label, "pretrained", mine, BASELINE_NAMES[base], other, alpha)
                    )
    ref = by_run[0]
    for name, found in zip(names[1:], by_run[1:], strict=True):
        for key, a in ref.items():
            b = found.get(key)
            if b is not None:
                label = f"{column_label(a)} (seed {key[1]})"
                lines.append(_paired_line(label, names[0], a, name, b, alpha))
    return lines
