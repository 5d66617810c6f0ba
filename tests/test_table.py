"""Result tables (seed aggregation, run comparison) and confusion-matrix plots."""

from __future__ import annotations

import csv
import io
import json
import statistics

import numpy as np
import pytest
import torch

from selfsup.analysis.plots import confusion_file_name, save_confusion_png, save_run_plots
from selfsup.evaluate.metrics import mcnemar, pack_correct, unpack_correct
from selfsup.evaluate.table import (
    aggregate,
    column_label,
    comparison_table,
    format_cell,
    init_table,
    merge_seed_runs,
    paired_tests,
    record_label,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rec(protocol: str, seed: int, top1: float, **kw) -> dict:
    base = {
        "protocol": protocol,
        "dataset": "cifar10",
        "init": "pretrained",
        "seed": seed,
        "top1": top1,
        "top5": min(1.0, top1 + 0.1),
        "f1_macro": top1 - 0.01,
        "n_train": 100,
        "n_test": 50,
    }
    return {**base, **kw}


def results(method: str, evals: list[dict], **kw) -> dict:
    return {
        "method": method,
        "backbone": "resnet18",
        "pretrain_dataset": "cifar10",
        "evals": evals,
        **kw,
    }


def parse_markdown(text: str) -> list[list[str]]:
    lines = [ln for i, ln in enumerate(text.splitlines()) if i != 1]  # drop the |---| rule
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]


# ---- aggregate ---------------------------------------------------------------------------


def test_aggregate_mean_and_sample_std_over_seeds():
    top1s = [0.81, 0.84, 0.86]
    records = [rec("knn", s, t, k=20) for s, t in enumerate(top1s)]
    records += [rec("knn", 0, 0.5, k=200), rec("linear", 0, 0.9, weight_decay=1e-4)]
    records.append(rec("linear", 1, 0.92, weight_decay=1e-5))  # chosen per seed: not identity
    aggs = aggregate(records)
    assert [(a["protocol"], a.get("k"), a["n"]) for a in aggs] == [
        ("knn", 20, 3),
        ("knn", 200, 1),
        ("linear", None, 2),
    ]
    knn = aggs[0]
    assert knn["top1"] == pytest.approx(statistics.fmean(top1s))
    assert knn["top1_std"] == pytest.approx(statistics.stdev(top1s))
    assert knn["f1_macro_std"] == pytest.approx(statistics.stdev([t - 0.01 for t in top1s]))
    assert knn["seeds"] == [0, 1, 2]
    assert aggs[1]["top1_std"] is None and aggs[1]["top1"] == pytest.approx(0.5)
    assert aggs[2]["top1_std"] == pytest.approx(statistics.stdev([0.9, 0.92]))


def test_aggregate_separates_init_fraction_ratio_and_dataset():
    records = [
        rec("finetune", 0, 0.5, fraction=0.01),
        rec("finetune", 0, 0.3, fraction=0.01, init="random"),
        rec("finetune", 0, 0.7, fraction=0.1),
        rec("pseudo-label", 0, 0.6, fraction=0.01, ratio=0.4),
        rec("pseudo-label", 0, 0.62, fraction=0.01, ratio=1.0),
        rec("knn", 0, 0.4, k=20, dataset="stl10"),
        rec("knn", 1, 0.42, k=20, dataset="stl10"),
    ]
    aggs = aggregate(records)
    assert [a["n"] for a in aggs] == [1, 1, 1, 1, 1, 2]


def test_column_labels():
    assert column_label(rec("knn", 0, 0.5, k=20)) == "knn k=20"
    assert column_label(rec("linear", 0, 0.5)) == "linear"
    assert column_label(rec("finetune", 0, 0.5, fraction=0.01)) == "finetune 1% (pretrained)"
    assert column_label(rec("finetune", 0, 0.5, fraction=0.1, init="random")) == (
        "finetune 10% (random)"
    )
    assert column_label(rec("pseudo-label", 0, 0.5, fraction=0.01, ratio=0.4)) == (
        "pseudo-label 1:0.4"
    )
    assert column_label(rec("supervised", 0, 0.5, init="random")) == "supervised"
    assert column_label(rec("knn", 0, 0.5, k=20, init="random")) == "knn k=20 (random)"
    assert column_label(rec("linear", 0, 0.5), dataset=True) == "linear on cifar10"
    assert record_label(rec("finetune", 0, 0.5, fraction=0.01)) == "finetune 1% on cifar10"


# ---- comparison table ----------------------------------------------------------------------


def two_runs() -> list[tuple[str, dict]]:
    a = [rec("linear", s, t) for s, t in enumerate([0.80, 0.82, 0.84])]
    a += [rec("knn", 0, 0.75, k=20), rec("finetune", 0, 0.40, fraction=0.01, init="random")]
    a += [rec("finetune", 0, 0.55, fraction=0.01), rec("finetune", 0, 0.70, fraction=0.1)]
    b = [rec("supervised", 0, 0.90, init="random"), rec("knn", 0, 0.65, k=20)]
    b += [rec("pseudo-label", 0, 0.61, fraction=0.01, ratio=1.0)]
    b += [rec("pseudo-label", 0, 0.60, fraction=0.01, ratio=0.4)]
    return [("runs/vicreg-a", results("vicreg", a)), ("runs/simclr-b", results("simclr", b))]


EXPECTED_COLUMNS = [
    "knn k=20",
    "linear",
    "finetune 1% (pretrained)",
    "finetune 1% (random)",
    "finetune 10% (pretrained)",
    "pseudo-label 1:0.4",
    "pseudo-label 1:1",
    "supervised",
]


def test_markdown_comparison_cells_columns_and_missing():
    rows = parse_markdown(comparison_table(two_runs()))
    assert rows[0] == ["run", *EXPECTED_COLUMNS]
    vicreg = dict(zip(rows[0], rows[1], strict=True))
    simclr = dict(zip(rows[0], rows[2], strict=True))
    assert vicreg["run"] == "vicreg" and simclr["run"] == "simclr"
    std = 100 * statistics.stdev([0.80, 0.82, 0.84])
    assert vicreg["linear"] == f"82.0 ± {std:.1f}"
    assert vicreg["knn k=20"] == "75.0"
    assert vicreg["finetune 1% (random)"] == "40.0"
    assert vicreg["supervised"] == "-" and vicreg["pseudo-label 1:0.4"] == "-"
    assert simclr["linear"] == "-" and simclr["supervised"] == "90.0"
    assert simclr["pseudo-label 1:0.4"] == "60.0"


def test_csv_comparison_parses_back_to_fractions():
    text = comparison_table(two_runs(), fmt="csv")
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert header[0] == "run"
    assert header[1::2] == EXPECTED_COLUMNS
    assert header[2::2] == [f"{c} std" for c in EXPECTED_COLUMNS]
    vicreg = dict(zip(header, rows[1], strict=True))
    assert float(vicreg["linear"]) == pytest.approx(0.82)
    assert float(vicreg["linear std"]) == pytest.approx(statistics.stdev([0.80, 0.82, 0.84]))
    assert float(vicreg["knn k=20"]) == pytest.approx(0.75)
    assert vicreg["knn k=20 std"] == ""  # one seed
    assert vicreg["supervised"] == "" and vicreg["supervised std"] == ""  # missing
    assert len(rows) == 3


def test_comparison_other_metric_and_bad_arguments():
    rows = parse_markdown(comparison_table(two_runs(), metric="f1_macro"))
    assert dict(zip(rows[0], rows[1], strict=True))["knn k=20"] == "74.0"
    with pytest.raises(ValueError, match="top1"):
        comparison_table(two_runs(), metric="accuracy")
    with pytest.raises(ValueError, match="csv"):
        comparison_table(two_runs(), fmt="html")


def test_duplicate_method_names_disambiguated_by_directory():
    runs = [
        ("out/vicreg-lr1", results("vicreg", [rec("knn", 0, 0.7, k=20)])),
        ("out/vicreg-lr2", results("vicreg", [rec("knn", 0, 0.6, k=20)])),
        ("out/dino", results("dino", [rec("knn", 0, 0.8, k=20)])),
    ]
    rows = parse_markdown(comparison_table(runs))
    assert [r[0] for r in rows[1:]] == ["vicreg (vicreg-lr1)", "vicreg (vicreg-lr2)", "dino"]
    assert [r[1] for r in rows[1:]] == ["70.0", "60.0", "80.0"]


def test_several_datasets_put_the_dataset_in_the_column():
    evals = [rec("linear", 0, 0.8), rec("knn", 0, 0.7, k=20, dataset="stl10")]
    evals.append(rec("knn", 0, 0.75, k=20))
    rows = parse_markdown(comparison_table([("r", results("vicreg", evals))]))
    assert rows[0] == ["run", "knn k=20 on cifar10", "linear on cifar10", "knn k=20 on stl10"]
    assert rows[1] == ["vicreg", "75.0", "80.0", "70.0"]


def test_init_table_shows_mean_and_std_over_seeds():
    records = [rec("linear", s, t) for s, t in enumerate([0.80, 0.84])]
    records += [rec("linear", s, t, init="random") for s, t in enumerate([0.30, 0.30])]
    records.append(rec("knn", 0, 0.7, k=20))
    rows = parse_markdown(init_table(records))
    assert rows[0] == ["evaluation", "pretrained top-1 / F1", "random top-1 / F1"]
    std = 100 * statistics.stdev([0.80, 0.84])
    assert rows[1] == [
        "linear on cifar10",
        f"82.0 ± {std:.1f}% / 81.0 ± {std:.1f}",
        "30.0% / 29.0",
    ]
    assert rows[2] == ["knn k=20 on cifar10", "70.0% / 69.0", "-"]


# ---- plots ---------------------------------------------------------------------------------


def read_png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return mpimg.imread(path)


def test_save_confusion_png_writes_a_readable_png(tmp_path):
    cm = [[50, 2, 0], [3, 40, 7], [0, 0, 0]]  # an absent class must not divide by zero
    path = save_confusion_png(cm, ["cat", "dog", "airplane"], tmp_path / "sub" / "c.png", "t")
    img = read_png(path)
    assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 300
    assert img.std() > 0.05  # not blank


def test_save_confusion_png_many_classes_and_bad_shapes(tmp_path):
    k = 100
    cm = [[10 if i == j else (1 if j == (i + 1) % k else 0) for j in range(k)] for i in range(k)]
    img = read_png(
        save_confusion_png(cm, [f"class_{i}" for i in range(k)], tmp_path / "b.png", "t")
    )
    assert 1000 <= img.shape[0] <= 2500
    with pytest.raises(ValueError, match="class names"):
        save_confusion_png([[1, 0], [0, 1]], ["a"], tmp_path / "x.png", "t")


def test_save_run_plots_names_and_class_names(tmp_path):
    cm = [[5, 1], [2, 4]]
    evals = [
        rec("knn", 0, 0.75, k=20, confusion=cm),
        rec("finetune", 1, 0.7, fraction=0.01, init="random", confusion=cm),
        rec("pseudo-label", 0, 0.7, fraction=0.01, ratio=0.4, confusion=cm),
        rec("linear", 0, 0.7, dataset="imagefolder:/data/my set", confusion=cm),
        rec("linear", 0, 0.7),  # no confusion matrix: no plot
    ]
    res = results("vicreg", evals, classes={"cifar10": ["cat", "dog"]})
    (tmp_path / "results.json").write_text(json.dumps(res))
    paths = save_run_plots(tmp_path)
    assert [p.name for p in paths] == [
        "confusion-knn-cifar10-pretrained-k20-s0.png",
        "confusion-finetune-cifar10-random-f0.01-s1.png",
        "confusion-pseudo-label-cifar10-pretrained-f0.01-r0.4-s0.png",
        "confusion-linear-imagefolder_data_my_set-pretrained-s0.png",
    ]
    assert all(p.parent == tmp_path / "plots" and p.is_file() for p in paths)
    for p in paths:
        assert p.read_bytes()[:8] == PNG_SIGNATURE
    assert confusion_file_name({"protocol": "knn", "dataset": "a/b", "seed": 2}) == (
        "confusion-knn-a_b-pretrained-s2.png"
    )


def test_baseline_verdict_says_when_pretraining_did_not_beat_pixels() -> None:
    from selfsup.evaluate.table import baseline_verdict

    def rec(init: str, top1: float, protocol: str = "knn") -> dict:
        return {
            "protocol": protocol,
            "dataset": "fashion-mnist",
            "init": init,
            "k": 20,
            "top1": top1,
            "top5": 1.0,
            "f1_macro": top1,
            "seed": 0,
        }

    lines = baseline_verdict([rec("pretrained", 0.83), rec("random", 0.75), rec("pixels", 0.85)])
    assert len(lines) == 1
    assert "+8.0" in lines[0] and "-2.0" in lines[0] and "does NOT beat raw pixels" in lines[0]
    ahead = baseline_verdict([rec("pretrained", 0.9), rec("random", 0.75), rec("pixels", 0.85)])
    assert "NOT" not in ahead[0] and "+5.0" in ahead[0]
    assert baseline_verdict([rec("pretrained", 0.9)]) == []  # nothing to compare with


def test_records_that_differ_only_in_lr_are_kept_apart() -> None:
    from selfsup.evaluate.config import EvalConfig, FinetuneEval
    from selfsup.evaluate.table import aggregate, eval_settings, init_table, settings_id
    from selfsup.rundir import merge_records

    def rec(lr: float, top1: float) -> dict:
        settings = eval_settings("finetune", EvalConfig(finetune=FinetuneEval(lrs=[lr])))
        return {
            "protocol": "finetune",
            "dataset": "fm",
            "init": "pretrained",
            "fraction": 0.1,
            "settings": settings,
            "settings_id": settings_id(settings),
            "top1": top1,
            "top5": 1.0,
            "f1_macro": top1,
            "seed": 0,
        }

    slow, fast = rec(0.05, 0.70), rec(0.4, 0.80)
    assert slow["settings_id"] != fast["settings_id"]
    assert len(aggregate([slow, fast])) == 2  # not one mean ± std over two recipes
    assert merge_records([slow], [fast]) == [slow, fast]  # neither replaces the other
    assert merge_records([slow], [rec(0.05, 0.71)]) == [rec(0.05, 0.71)]  # a re-run replaces
    table = init_table([slow, fast])
    # two rows, told apart by what differs (issue #25.10: not an opaque "[settings 4e797b59]")
    assert "[finetune.lrs=[0.05]]" in table and "[finetune.lrs=[0.4]]" in table
    assert "[settings" not in table
    # a setting another protocol uses does not split a kNN measurement
    a = eval_settings("knn", EvalConfig(finetune=FinetuneEval(lrs=[0.05])))
    assert a == eval_settings("knn", EvalConfig(finetune=FinetuneEval(lrs=[0.4])))


def test_mcnemar_exact_on_hand_counted_discordant_pairs() -> None:
    a = np.array([True] * 10 + [False] * 5 + [True] * 85)
    b = np.array([False] * 10 + [False] * 5 + [True] * 85)
    t = mcnemar(a, b)  # 10 images only A gets right, none only B: p = 2 / 2**10
    assert (t["b"], t["c"]) == (10, 0) and t["p"] == pytest.approx(2 / 2**10)
    t = mcnemar(a, a)
    assert (t["b"], t["c"], t["p"]) == (0, 0, 1.0)
    b2 = a.copy()
    b2[:3], b2[10:13] = False, True  # 3 vs 3 discordant: no evidence either way
    assert mcnemar(a, b2)["p"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same test images"):
        mcnemar(a, a[:50])


def test_correctness_bits_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 9, 10_000):
        hits = torch.rand(n, generator=g) < 0.7
        assert np.array_equal(unpack_correct(pack_correct(hits), n), hits.numpy())


def paired_rec(run_seed: int, correct: np.ndarray, test_id: str = "t1") -> dict:
    return rec(
        "knn",
        0,
        float(correct.mean()),
        k=20,
        n_test=len(correct),
        test_id=test_id,
        correct=pack_correct(torch.from_numpy(correct)),
    )


def test_paired_tests_say_which_differences_are_significant() -> None:
    g = np.random.default_rng(0)
    truth_a = g.random(2000) < 0.80
    close = truth_a.copy()
    close[np.flatnonzero(truth_a)[:5]] = False  # 5 images lost, 5 won: noise
    close[np.flatnonzero(~truth_a)[:5]] = True
    worse = truth_a & (g.random(2000) < 0.9)  # loses ~160 images A gets right
    runs = [
        ("a", results("vicreg", [paired_rec(0, truth_a)])),
        ("b", results("simclr", [paired_rec(0, close)])),
        ("c", results("moco", [paired_rec(0, worse)])),
        ("d", results("isd", [paired_rec(0, worse, test_id="other")])),
    ]
    lines = paired_tests(runs)
    assert len(lines) == 3
    assert "simclr" in lines[0] and "not significant" in lines[0]
    assert "moco" in lines[1] and ", significant at 0.05" in lines[1]
    assert "different test images, no paired test" in lines[2]


def test_runs_differing_only_in_seed_merge_into_one_row_with_a_spread() -> None:
    runs = [
        ("vicreg-s0", results("vicreg", [rec("linear", 0, 0.80)]), "cfg-a"),
        ("vicreg-s1", results("vicreg", [rec("linear", 1, 0.84)]), "cfg-a"),
        ("simclr", results("simclr", [rec("linear", 0, 0.70)]), "cfg-b"),
    ]
    merged = merge_seed_runs(runs)
    assert [name for name, _ in merged] == ["vicreg-s0 (+1 seeds)", "simclr"]
    table = comparison_table(merged)
    assert "82.0 ± 2.8" in table and "70.0" in table


def test_an_identical_figure_on_every_seed_is_not_shown_with_a_zero_spread() -> None:
    assert format_cell(0.875, 0.0, 3) == "87.5"  # kNN over evaluation seeds: deterministic
    assert format_cell(0.875, 0.004, 3) == "87.5 ± 0.4"
    assert format_cell(0.875, None, 1) == "87.5"


def test_paired_tests_compare_pretrained_with_its_baselines_within_a_run() -> None:
    g = np.random.default_rng(1)
    mine = g.random(1000) < 0.85
    random_init = mine & (g.random(1000) < 0.7)  # far worse
    pixels = mine.copy()
    pixels[:4] ^= True  # about the same
    evals = [
        paired_rec(0, mine),
        {**paired_rec(0, random_init), "init": "random"},
        {**paired_rec(0, pixels), "init": "pixels"},
    ]
    lines = paired_tests([("a", results("vicreg", evals))])
    assert len(lines) == 2
    assert "pretrained" in lines[0] and "random init" in lines[0]
    assert ", significant at 0.05" in lines[0]
    assert "raw pixels" in lines[1] and "not significant" in lines[1]


def test_a_teacher_and_a_student_record_are_two_measurements() -> None:
    from selfsup.rundir import merge_records

    student = rec("knn", 0, 0.80, k=20, backbone="student")
    teacher = rec("knn", 0, 0.83, k=20, backbone="teacher")
    assert merge_records([student], [teacher]) == [student, teacher]  # neither replaces
    table = comparison_table([("dino", results("dino", [student, teacher]))])
    assert "knn k=20 [teacher]" in table and "83.0" in table and "80.0" in table


def test_curves_png_plots_the_loss_parts_lr_and_epoch_monitors(tmp_path) -> None:
    from selfsup.analysis.plots import save_curves_png

    assert save_curves_png(tmp_path) is None  # no metrics.jsonl: nothing to draw
    lines = [
        {
            "step": s,
            "epoch": s // 5,
            "loss": 10.0 - s / 5,
            "lr": 0.1,
            "images_per_s": 500.0,
            "invariance": 0.5,
            "variance": 0.6,
        }
        for s in range(10)
    ]
    lines += [
        {
            "epoch": 1,
            "step": 5,
            "train_seconds": 1.0,
            "monitor_knn_top1": 0.7,
            "monitor_collapse_warning": False,
            "monitor_effective_rank": 12.0,
        }
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    path = save_curves_png(tmp_path)
    assert path == tmp_path / "plots" / "curves.png"
    png = path.read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000


def test_baseline_verdict_prints_the_paired_test_and_flags_a_lead_it_cannot_tell() -> None:
    """Issue #21: the demo's verdict carries the exact McNemar p of pretrained vs each
    baseline on the same test images; a lead with p >= 0.05 is not called a win."""
    import torch

    from selfsup.evaluate.metrics import pack_correct
    from selfsup.evaluate.table import baseline_verdict

    n = 1000
    gen = torch.Generator().manual_seed(0)

    def rec(init: str, right: torch.Tensor) -> dict:
        return {
            "protocol": "knn",
            "dataset": "fashion-mnist",
            "init": init,
            "k": 20,
            "top1": float(right.float().mean()),
            "f1_macro": 0.5,
            "seed": 0,
            "n_test": n,
            "test_id": "t",
            "correct": pack_correct(right),
        }

    base = torch.rand(n, generator=gen) < 0.80
    far = base | (torch.rand(n, generator=gen) < 0.5)  # fixes half the errors: +10 points
    near = base.clone()
    near[torch.nonzero(~base)[:3, 0]] = True  # 3 more images right: +0.3 points
    line = baseline_verdict([rec("pretrained", far), rec("pixels", base)])[0]
    assert "McNemar p=" in line and "NOT" not in line and "not significantly" not in line
    assert float(line.split("McNemar p=")[1].split(")")[0]) < 1e-6
    close = baseline_verdict([rec("pretrained", near), rec("pixels", base)])[0]
    assert "+0.3" in close and "but not significantly (p >= 0.05)" in close


def test_an_ema_teachers_row_keeps_the_baselines_and_their_paired_test() -> None:
    """Issue #25.8: DINO's teacher rows lost their random-init and pixel cells (a baseline has
    no teacher, so its records never matched the teacher's row) and their verdict."""
    import torch

    from selfsup.evaluate.metrics import pack_correct
    from selfsup.evaluate.table import baseline_verdict, init_table

    n = 400
    gen = torch.Generator().manual_seed(1)
    pixels = torch.rand(n, generator=gen) < 0.7
    teacher = pixels | (torch.rand(n, generator=gen) < 0.5)

    def rec(init: str, right: torch.Tensor, backbone: str | None = None) -> dict:
        r = {
            "protocol": "knn",
            "dataset": "fm",
            "init": init,
            "k": 20,
            "seed": 0,
            "top1": float(right.float().mean()),
            "f1_macro": 0.5,
            "n_test": n,
            "test_id": "t",
            "correct": pack_correct(right),
        }
        return {**r, "backbone": backbone} if backbone else r

    records = [rec("pretrained", teacher, "teacher"), rec("pretrained", pixels, "student")]
    records += [rec("random", pixels & (torch.rand(n, generator=gen) < 0.5)), rec("pixels", pixels)]
    rows = [line for line in init_table(records).splitlines() if "[teacher]" in line]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert all(c != "-" for c in cells)
    lines = [v for v in baseline_verdict(records) if "[teacher]" in v]
    assert len(lines) == 1 and "raw pixels" in lines[0] and "random init" in lines[0]
    assert "McNemar p=" in lines[0]


def test_a_k_larger_than_the_bank_is_named_as_asked_not_silently_replaced() -> None:
    """Issue #25.8: kNN k=200 became k=178 on a small bank without a word in the table."""
    from selfsup.evaluate.table import init_table

    rec = {
        "protocol": "knn",
        "dataset": "fm",
        "init": "pretrained",
        "k": 178,
        "k_requested": [200],
        "top1": 0.5,
        "f1_macro": 0.5,
        "seed": 0,
    }
    assert "knn k=178 (asked 200: the whole bank) on fm" in init_table([rec])


def test_the_verdict_points_to_the_measured_curves_only_where_they_were_measured() -> None:
    """Issue #25.8: "(see ... Fashion-MNIST results)" was printed for an icon folder and for a
    supervised run."""
    from selfsup.evaluate.table import baseline_verdict

    def recs(dataset: str) -> list[dict]:
        return [
            {
                "protocol": "knn",
                "dataset": dataset,
                "init": init,
                "k": 20,
                "top1": top1,
                "f1_macro": top1,
                "seed": 0,
            }
            for init, top1 in (("pretrained", 0.8), ("pixels", 0.85))
        ]

    assert "RESULTS.md" in baseline_verdict(recs("fashion-mnist"))[0]
    icons = baseline_verdict(recs("imagefolder:/data/icons"))[0]
    assert "does NOT beat raw pixels" in icons and "RESULTS.md" not in icons
    supervised = baseline_verdict(recs("fashion-mnist"), main="trained (supervised)")[0]
    assert "does NOT beat" in supervised and "RESULTS.md" not in supervised
