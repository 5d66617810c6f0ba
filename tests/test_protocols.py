"""The evaluation protocols end to end, the label-fraction sampler, pseudo-label selection and
the guard that keeps the test split out of every protocol's fit."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.config import Config, load_config
from selfsup.data.array import ImageArray, channel_stats
from selfsup.data.sampling import class_balanced_indices, complement
from selfsup.data.views import eval_view, make_views
from selfsup.errors import ConfigError, DataError
from selfsup.evaluate import protocols, semisupervised
from selfsup.evaluate.context import PROTOCOLS, EvalContext, Fitted
from selfsup.evaluate.harness import evaluate_backbone, load_eval_splits
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.protocols import held_out
from selfsup.evaluate.semisupervised import select_confident
from selfsup.evaluate.table import init_table
from selfsup.features import extract_features
from selfsup.pipeline import pretrain
from tiny import TINY

ALL = ["knn", "linear", "linear-aug", "finetune", "pseudo-label"]
EVAL = [
    "train.device=cpu",
    "eval.train_limit=200",
    "eval.test_limit=100",
    "eval.batch_size=256",
    "eval.knn.k=[5,20]",
    "eval.linear.l2=[0.01]",
    "eval.finetune.lrs=[0.05]",
    "eval.linear_aug.epochs=1",
    "eval.finetune.epochs=1",
    "eval.finetune.batch_size=32",
    "eval.finetune.fractions=[0.1,0.5]",
    "eval.pseudo.fraction=0.2",
    "eval.pseudo.ratios=[0.0,0.5,10.0]",
    "eval.pseudo.threshold=0.0",
]
CPU = torch.device("cpu")


def config(*overrides: str) -> Config:
    return load_config(None, [*TINY, *EVAL, *overrides])


def tiny_backbone(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_backbone(config().backbone, in_channels=3, image_size=16)


def evaluate(
    backbone: nn.Module,
    cfg: Config,
    names: list[str],
    work: Path,
    splits: dict[str, tuple[ImageArray, ImageArray]] | None = None,
) -> list[dict]:
    return evaluate_backbone(
        backbone,
        cfg.eval,
        datasets=list(splits or ["synthetic"]),
        protocols=names,
        size=16,
        init="pretrained",
        root=None,
        download=False,
        image_size=16,
        seed=cfg.seed,
        device=CPU,
        splits=splits,
        run_cfg=cfg,
        work_dir=work,
    )


def synthetic_splits(cfg: Config) -> tuple[ImageArray, ImageArray]:
    return load_eval_splits("synthetic", cfg.eval, root=None, download=False, image_size=16)


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    """Same parameters *and* buffers (batch-norm running statistics)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_harness_refuses_a_test_split_whose_classes_differ_from_the_banks(
    tmp_path: Path,
) -> None:
    """Issue 22.4: label i of the test split must mean the class label i means in the
    training split (the kNN bank, the probe's targets); the harness used to score any pair of
    splits, so misaligned image-folder classes reported 0.0% for every backbone."""
    cfg = config()
    train, test = synthetic_splits(cfg)
    names = [*test.classes[1:], test.classes[0]]  # the same names, labels shifted by one
    shifted = ImageArray(test.images, test.labels, names, test.name, test.split)
    with pytest.raises(DataError, match=r"classes.*differ.*circle-striped.*circle-checkered"):
        evaluate(tiny_backbone(), cfg, ["knn"], tmp_path, {"synthetic": (train, shifted)})


# --- the leakage guard: a test split that logs every touch, protocols that log their fit -----


def tracked_split(data: ImageArray, log: list[str]) -> ImageArray:
    """``data`` with images and labels that append to ``log`` whenever any torch function or
    method reads them (or a tensor computed from them)."""

    class Tracked(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            log.append(f"touch {getattr(func, '__name__', func)}")
            return super().__torch_function__(func, types, args, kwargs)

    images, labels = data.images.as_subclass(Tracked), data.labels.as_subclass(Tracked)
    return ImageArray(images, labels, list(data.classes), data.name, data.split)


def log_fits(monkeypatch: pytest.MonkeyPatch, log: list[str]) -> None:
    """Wrap every registered protocol so that its fit is bracketed by log events."""
    for name in PROTOCOLS.names():
        fit = PROTOCOLS.get(name)

        def logged(backbone: nn.Module, ctx: EvalContext, name=name, fit=fit) -> list[Fitted]:
            log.append(f"fit-start {name}")
            fitted = fit(backbone, ctx)
            log.append(f"fit-end {name}")
            return fitted

        monkeypatch.setitem(PROTOCOLS._items, name, logged)


def touches(log: list[str]) -> dict[str, list[int]]:
    """protocol -> [test touches while it was fitting, test touches after, until the next fit]."""
    out: dict[str, list[int]] = {}
    current, fitting = None, False
    for event in log:
        kind, _, rest = event.partition(" ")
        if kind == "fit-start":
            current, fitting = rest, True
            out.setdefault(current, [0, 0])
        elif kind == "fit-end":
            fitting = False
        elif kind == "touch" and current is not None:
            out[current][0 if fitting else 1] += 1
    return out


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Every protocol, two seeds, on synthetic, with the test split tracked and each fit logged;
    the classifiers the protocols train and the pseudo-label selections are recorded."""
    cfg = config("eval.seeds=[0,1]")
    train, test = synthetic_splits(cfg)
    log: list[str] = []
    test = tracked_split(test, log)
    backbone = tiny_backbone()
    original = copy.deepcopy(backbone)
    trained, selections = [], []
    real_train, real_select = protocols.train_classifier, semisupervised.select_confident

    def spy_train(ctx: EvalContext, backbone: nn.Module, data: ImageArray, **kw):
        model, epochs = real_train(ctx, backbone, data, **kw)
        trained.append(SimpleNamespace(data=data, model=model, seed=ctx.seed, **kw))
        return model, epochs

    def spy_select(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        keep, pseudo = real_select(probs, threshold)
        selections.append(SimpleNamespace(probs=probs, threshold=threshold, pseudo=pseudo))
        return keep, pseudo

    with pytest.MonkeyPatch.context() as mp:
        log_fits(mp, log)
        mp.setattr(protocols, "train_classifier", spy_train)
        mp.setattr(semisupervised, "select_confident", spy_select)
        records = evaluate(
            backbone, cfg, ALL, tmp_path_factory.mktemp("eval"), {"synthetic": (train, test)}
        )
    return SimpleNamespace(
        cfg=cfg,
        train=train,
        records=records,
        log=log,
        backbone=backbone,
        original=original,
        trained=trained,
        selections=selections,
    )


def test_records_have_protocol_fields_and_valid_metrics(guarded: SimpleNamespace) -> None:
    train, recs, num_classes = guarded.train, guarded.records, len(guarded.train.classes)
    assert {r["protocol"] for r in recs} == set(ALL)
    for r in recs:
        assert r["dataset"] == "synthetic" and r["init"] == "pretrained"
        assert (r["n_train"], r["n_test"]) == (200, 100)
        assert 0 <= r["top1"] <= r["top5"] <= 1 and 0 <= r["f1_macro"] <= 1
        cm = torch.tensor(r["confusion"])
        assert cm.shape == (num_classes, num_classes) and int(cm.sum()) == r["n_test"]
        assert r["top1"] == pytest.approx(float(cm.trace()) / r["n_test"])
        assert len(r["per_class_acc"]) == num_classes
        assert all(a is None or 0 <= a <= 1 for a in r["per_class_acc"])
    by = {p: [r for r in recs if r["protocol"] == p] for p in ALL}
    assert sorted((r["seed"], r["k"]) for r in by["knn"]) == [(0, 5), (0, 20), (1, 5), (1, 20)]
    for r in by["finetune"]:
        expected = len(class_balanced_indices(train.labels, r["fraction"], r["seed"]))
        assert r["n_labelled"] == expected < len(train)
    assert sorted((r["seed"], r["fraction"]) for r in by["finetune"]) == [
        (s, f) for s in (0, 1) for f in (0.1, 0.5)
    ]
    for r in by["pseudo-label"]:
        lab = class_balanced_indices(train.labels, 0.2, r["seed"])
        held_out_for_lr = round(guarded.cfg.eval.val_fraction * len(train))
        pool = len(train) - len(lab) - held_out_for_lr  # neither labelled nor validation
        assert r["n_labelled"] == len(lab)
        asked = r.get("ratio_requested", r["ratio"])  # a capped arm is named by what it got
        assert r["n_unlabeled"] == min(pool, round(asked * len(lab)))
        assert r["n_pseudo"] == r["n_unlabeled"]  # threshold 0 keeps every pool image
        if r["n_pseudo"]:
            assert 0 <= r["pseudo_label_acc"] <= 1
        else:
            assert r["pseudo_label_acc"] is None
    asked = {
        (r.get("ratio_requested", r["ratio"]), r["n_unlabeled"] > 0) for r in by["pseudo-label"]
    }
    assert asked == {(0.0, False), (0.5, True), (10.0, True)}
    capped = [r for r in by["pseudo-label"] if "ratio_requested" in r]
    assert all(r["ratio"] == round(r["n_unlabeled"] / r["n_labelled"], 2) for r in capped)
    held = round(guarded.cfg.eval.val_fraction * 200)
    assert any(r["n_unlabeled"] == 200 - r["n_labelled"] - held for r in by["pseudo-label"])
    # one full set of records per seed, with the same protocol settings
    for p in ALL:
        settings = {
            s: [(r.get("k"), r.get("fraction"), r.get("ratio")) for r in by[p] if r["seed"] == s]
            for s in (0, 1)
        }
        assert settings[0] and settings[0] == settings[1]


def test_no_protocol_reads_the_test_split_while_fitting(guarded: SimpleNamespace) -> None:
    counts = touches(guarded.log)
    assert set(counts) == set(ALL)
    for name, (while_fitting, when_reporting) in counts.items():
        assert while_fitting == 0, f"{name} read the test split during its fit"
        assert when_reporting > 0, f"{name} was never scored on the test split"
    starts = [e for e in guarded.log if e.startswith("fit-start")]
    assert len(starts) == 2 * len(ALL)  # each protocol fitted once per seed


def test_trained_protocols_leave_the_callers_backbone_unchanged(guarded: SimpleNamespace) -> None:
    assert states_equal(guarded.backbone, guarded.original)
    finetuned = [t for t in guarded.trained if not t.frozen]
    frozen = [t for t in guarded.trained if t.frozen]
    assert len(frozen) == 2  # linear-aug, once per seed
    assert len(finetuned) == 2 * 2 + 2 * 3  # 2 fractions + 3 pseudo-label students per seed
    for t in finetuned:  # fine-tuning trained a copy, whose weights and statistics moved
        assert t.model.backbone is not guarded.backbone
        assert not states_equal(t.model.backbone, guarded.original)
    for t in frozen:  # linear-aug: weights and batch-norm running statistics untouched
        assert states_equal(t.model.backbone, guarded.original)


def test_pseudo_label_students_train_on_labelled_plus_confident_pool(
    guarded: SimpleNamespace,
) -> None:
    students = [t for t in guarded.trained if t.name.startswith("pseudo-label")]
    recs = [r for r in guarded.records if r["protocol"] == "pseudo-label"]
    with_pool = [r for r in recs if r["n_unlabeled"]]
    assert len(guarded.selections) == len(with_pool)  # the teacher only labels a real pool
    for sel, r in zip(guarded.selections, with_pool, strict=True):
        assert len(sel.probs) == r["n_unlabeled"]
        assert r["n_pseudo"] == int((sel.probs.max(1).values >= sel.threshold).sum())
    for t, r in zip(students, recs, strict=True):
        assert len(t.data) == r["n_labelled"] + r["n_pseudo"]
    # the appended labels are the teacher's argmax, not the hidden true labels
    for sel, r in zip(guarded.selections, with_pool, strict=True):
        student = next(
            t
            for t in students
            if t.name == f"pseudo-label-{r['ratio']:g}-s{r['seed']}-lr{r['lr']:g}"
        )
        assert torch.equal(student.data.labels[r["n_labelled"] :], sel.pseudo)


def test_guard_catches_a_protocol_that_reads_the_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config("eval.knn.k=[1]")
    train, test = synthetic_splits(cfg)
    log: list[str] = []
    test = tracked_split(test, log)

    def leaky(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
        # the test split, captured outside the context: a 1-NN "fitted" on it
        bank, bank_labels = ctx.features(backbone, test).clone(), test.labels.clone()

        def scores(data: ImageArray) -> torch.Tensor:
            query = ctx.features(backbone, data)
            return knn_predict(bank, bank_labels, query, k=1, temperature=0.07, num_classes=10)

        return [Fitted({}, scores)]

    monkeypatch.setitem(PROTOCOLS._items, "leaky", leaky)
    log_fits(monkeypatch, log)
    recs = evaluate(tiny_backbone(), cfg, ["knn", "leaky"], tmp_path, {"synthetic": (train, test)})
    counts = touches(log)
    assert counts["knn"][0] == 0 and counts["leaky"][0] > 0
    leaked, honest = (next(r for r in recs if r["protocol"] == p) for p in ("leaky", "knn"))
    assert leaked["top1"] == 1.0 > honest["top1"]  # its test "accuracy" is memorised


# --- protocols learn: two classes, bright vs dark images, chance is 50% ----------------------


def bright_vs_dark(n: int, seed: int, bright: int) -> ImageArray:
    """``n`` noisy 16-px images, half bright (label ``bright``), half dark (the other label)."""
    g = torch.Generator().manual_seed(seed)
    is_bright = torch.randperm(n, generator=g) % 2 == 1
    base = torch.where(is_bright, 160, 40).view(n, 1, 1, 1)
    noise = torch.randint(0, 56, (n, 3, 16, 16), generator=g)
    labels = torch.where(is_bright, bright, 1 - bright)
    return ImageArray((base + noise).to(torch.uint8), labels, ["a", "b"], "easy")


def test_protocols_learn_an_easy_problem(tmp_path: Path) -> None:
    """Each protocol scores >= 90% with either labelling of the same images: a predictor that
    had not learned from the labels (a lucky random head) would score 1 - x on the swapped one."""
    cfg = config(
        "eval.linear_aug.epochs=3",
        "eval.linear_aug.lrs=[1.0]",
        "eval.finetune.epochs=3",
        "eval.finetune.fractions=[0.5]",
        "eval.finetune.lrs=[0.5]",
    )
    names = ["knn", "linear", "linear-aug", "finetune"]
    for bright in (0, 1):
        splits = {"easy": (bright_vs_dark(128, 0, bright), bright_vs_dark(64, 1, bright))}
        recs = evaluate(tiny_backbone(), cfg, names, tmp_path / str(bright), splits)
        assert {r["protocol"] for r in recs} == set(names)
        for r in recs:
            assert r["top1"] >= 0.9, (r["protocol"], bright, r["top1"])


# --- pseudo-label selection -----------------------------------------------------------------


def test_select_confident_keeps_argmax_at_or_above_threshold() -> None:
    probs = torch.tensor([[0.25, 0.75], [0.625, 0.375], [0.125, 0.875], [0.5, 0.5]])
    keep, pseudo = select_confident(probs, 0.75)
    assert keep.tolist() == [True, False, True, False]  # 0.75 >= 0.75 is kept
    assert pseudo.tolist()[:3] == [1, 0, 1]
    assert select_confident(probs, 0.0)[0].all()
    assert not select_confident(probs, 1.0)[0].any()
    assert select_confident(torch.tensor([[0.0, 1.0]]), 1.0)[0].tolist() == [True]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            select_confident(probs, bad)


def test_pseudo_label_threshold_counts_confident_pool_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    confidences = []
    real = semisupervised.select_confident

    def spy(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        confidences.append(probs.max(1).values)
        return real(probs, threshold)

    monkeypatch.setattr(semisupervised, "select_confident", spy)
    train_test = synthetic_splits(config())
    backbone = tiny_backbone()
    passed, median = {}, None
    for threshold in (0.0, "median", 1.0):
        if threshold == "median":  # a threshold between the pool's confidences
            threshold = median
        confidences.clear()
        cfg = config(f"eval.pseudo.threshold={threshold}", "eval.pseudo.ratios=[1.0]")
        (r,) = evaluate(backbone, cfg, ["pseudo-label"], tmp_path, {"s": train_test})
        (conf,) = confidences
        assert len(conf) == r["n_unlabeled"] == r["n_labelled"]
        assert r["n_pseudo"] == int((conf >= threshold).sum())
        assert (r["pseudo_label_acc"] is None) == (r["n_pseudo"] == 0)
        passed[threshold] = r["n_pseudo"]
        median = float(conf.median()) if median is None else median
    assert passed[0.0] == r["n_unlabeled"]  # threshold 0 keeps every pool image
    assert 0 < passed[median] < r["n_unlabeled"]  # a threshold between them really filters
    assert passed[1.0] <= passed[median]  # and a stricter one keeps fewer


def test_the_probe_teacher_chooses_its_penalty_on_the_held_out_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pseudo-label teacher's L2 penalty is chosen on the held-out training images (the
    students' lr-choice images), not on a tenth carved from the few labelled ones: on 50 of
    500 Fashion-MNIST images penalties 1e-4..1 tied, the tie kept 1.0, and that probe was so
    smooth that no pool image passed the 0.9 threshold. The record says what chose it."""
    from selfsup.evaluate import context

    seen: list[int | None] = []
    real = context.select_and_fit_linear

    def spy(features, labels, num_classes, **kw):
        val = kw.get("val")
        seen.append(None if val is None else len(val[1]))
        return real(features, labels, num_classes, **kw)

    monkeypatch.setattr(context, "select_and_fit_linear", spy)
    cfg = config("eval.pseudo.ratios=[1.0]", "eval.linear.l2=[1.0,0.001]")
    (r,) = evaluate(tiny_backbone(), cfg, ["pseudo-label"], tmp_path, {"s": synthetic_splits(cfg)})
    (n_val,) = seen  # None: carved from the labelled images (the code before)
    assert n_val is not None and n_val > 0
    assert r["teacher_n_val"] == n_val and r["teacher_l2"] in (1.0, 0.001)


# --- the class-balanced label-fraction sampler ----------------------------------------------


def test_class_balanced_indices_takes_rounded_share_of_each_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 7 + [2] * 3 + [-1] * 20 + [3] * 1)
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    idx = class_balanced_indices(labels, 0.1, seed=0)
    counts = torch.bincount(labels[idx], minlength=4).tolist()
    assert counts == [5, 1, 1, 1]  # round(5.0), round(0.7), max(1, round(0.3)), max(1, 0.1)
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == len(idx)
    assert (labels[idx] >= 0).all()  # unlabeled images are never chosen
    more = torch.bincount(labels[class_balanced_indices(labels, 0.4, seed=0)], minlength=4)
    assert more.tolist() == [20, 3, 1, 1]  # round(20.0), round(2.8), round(1.2), max(1, 0)


def test_class_balanced_indices_is_seeded() -> None:
    labels = torch.arange(1000) % 10
    a, b = class_balanced_indices(labels, 0.1, 3), class_balanced_indices(labels, 0.1, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, class_balanced_indices(labels, 0.1, 4))
    labels_with_unlabeled = torch.cat([labels, torch.full((50,), -1)])
    every = class_balanced_indices(labels_with_unlabeled, 1.0, 0)
    assert torch.equal(every, torch.arange(1000))  # fraction 1: every labelled image


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_class_balanced_indices_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        class_balanced_indices(torch.arange(10) % 2, fraction, 0)


def test_class_balanced_indices_needs_labels() -> None:
    with pytest.raises(ConfigError):
        class_balanced_indices(torch.full((10,), -1), 0.5, 0)


def test_complement() -> None:
    index = torch.tensor([7, 0, 3])
    rest = complement(10, index)
    assert rest.tolist() == [1, 2, 4, 5, 6, 8, 9]
    assert complement(4, torch.tensor([], dtype=torch.long)).tolist() == [0, 1, 2, 3]
    assert complement(3, torch.arange(3)).numel() == 0
    idx = class_balanced_indices(torch.arange(100) % 4, 0.3, 1)
    both = torch.cat([idx, complement(100, idx)]).sort().values
    assert torch.equal(both, torch.arange(100))


# --- the feature cache --------------------------------------------------------------------


def test_feature_cache_is_not_fooled_by_a_recycled_object(tmp_path: Path) -> None:
    """Protocols extract features of short-lived subsets (the pseudo-label pools): a subset
    allocated where a freed one lived (same ``id``) must not get the freed one's features."""
    cfg = config()
    train, _ = synthetic_splits(cfg)
    backbone = tiny_backbone()
    mean, std = channel_stats(train.images)
    ctx = EvalContext("synthetic", train, 10, 16, mean, std, 3, CPU, 0, cfg.eval, cfg, tmp_path)
    seen, reused = set(), False
    for n in range(2, 40):
        data = train.subset(torch.arange(n))
        reused |= id(data) in seen
        seen.add(id(data))
        assert len(ctx.features(backbone, data)) == n
        del data  # as the pseudo-label protocol drops the pool of the previous ratio
    if not reused:
        pytest.skip("the allocator never put a new subset where a freed one lived")
    data = train.subset(torch.arange(40, 60))
    kw = dict(size=16, mean=mean, std=std, precision=cfg.train.precision)  # as the run trained
    direct = extract_features(backbone, data.images, **kw)
    assert torch.equal(ctx.features(backbone, data), direct)


def test_pretrain_evaluates_pretrained_and_random_backbones(tmp_path: Path) -> None:
    cfg = config(
        "data.limit=64",
        "train.epochs=1",
        "eval.protocols=[finetune]",
        "eval.finetune.fractions=[0.5]",
        "eval.compare_random=true",
    )
    results = pretrain(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results
    evals = results["evals"]
    assert sorted(r["init"] for r in evals) == ["pretrained", "random"]
    for r in evals:
        assert r["protocol"] == "finetune" and r["fraction"] == 0.5 and r["seed"] == 0
        assert sum(map(sum, r["confusion"])) == r["n_test"] == 100  # eval.test_limit
    assert (tmp_path / "run" / "evals").is_dir()


def test_evaluation_subsets_are_the_same_images_for_every_seed() -> None:
    """Runs with other seeds are scored on the same test images (and fit on the same bank)."""
    a = load_config(None, ["eval.train_limit=40", "eval.test_limit=30", "seed=0"])
    b = load_config(None, ["eval.train_limit=40", "eval.test_limit=30", "seed=7"])
    (train_a, test_a), (train_b, test_b) = synthetic_splits(a), synthetic_splits(b)
    assert len(test_a) == 30 and torch.equal(test_a.images, test_b.images)
    assert torch.equal(train_a.images, train_b.images)
    assert torch.equal(test_a.labels, test_b.labels)


def test_finetune_chooses_the_lr_per_arm_on_held_out_training_images(tmp_path: Path) -> None:
    """Each (init, fraction) arm tries every lr and keeps the best on training images outside
    its labelled fraction; an lr so small that nothing is learned must lose; the pretrained and
    random-init arms train the same number of steps, and the table label shows it."""
    cfg = config(
        "eval.finetune.fractions=[0.5]",
        "eval.finetune.lrs=[1e-6,0.5]",
        "eval.finetune.epochs=3",
        "eval.val_fraction=0.25",
    )
    splits = {"easy": (bright_vs_dark(128, 0, 1), bright_vs_dark(64, 1, 1))}
    recs = []
    for init, seed in (("pretrained", 0), ("random", 1)):
        for r in evaluate(tiny_backbone(seed), cfg, ["finetune"], tmp_path / init, splits):
            recs.append({**r, "init": init})
    for r in recs:
        sweep = dict(r["lr_sweep"])
        assert set(sweep) == {1e-6, 0.5}
        assert r["lr"] == max(sweep, key=sweep.get) == 0.5, sweep
        assert r["val_top1"] == sweep[0.5] > sweep[1e-6]
    assert recs[0]["steps"] == recs[1]["steps"] == recs[0]["epochs"] * (64 // 32)
    assert f"({recs[0]['steps']} steps)" in init_table(recs)


def test_held_out_images_lie_outside_the_labelled_fraction() -> None:
    cfg = config("eval.val_fraction=0.2")
    train, _ = synthetic_splits(cfg)
    ctx = SimpleNamespace(train=train, cfg=cfg.eval, seed=0)
    labelled = class_balanced_indices(train.labels, 0.1, seed=0)
    fit_idx, val_idx = held_out(ctx, labelled)
    assert torch.equal(fit_idx, labelled)
    assert len(val_idx) == round(0.2 * len(train))
    assert set(val_idx.tolist()).isdisjoint(labelled.tolist())
    everything = torch.arange(len(train))  # no image outside: carved from the labelled ones
    fit_idx, val_idx = held_out(ctx, everything)
    assert set(fit_idx.tolist()).isdisjoint(val_idx.tolist())
    assert len(fit_idx) + len(val_idx) == len(train)


RESOLVED = ["views.size=16", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]


def method_config(name: str, *overrides: str) -> Config:
    """``config`` for another method: TINY without its VICReg projector."""
    tiny = [o for o in TINY if not o.startswith("method.")]
    return load_config(None, [*tiny, *EVAL, f"method.name={name}", *overrides])


def test_dino_is_evaluated_on_its_teacher_and_other_methods_on_the_student() -> None:
    from selfsup.pipeline import eval_backbone
    from selfsup.rundir import make_method

    dino = make_method(method_config("dino", *RESOLVED), 3)
    assert eval_backbone(dino, "auto") == ("teacher", dino.teacher[0])  # DINO's eval_knn.py
    assert eval_backbone(dino, "student") == ("student", dino.backbone)
    moco = make_method(method_config("moco", *RESOLVED), 3)
    assert eval_backbone(moco, "auto") == ("student", moco.backbone)  # moco main_lincls.py
    assert eval_backbone(moco, "teacher")[1] is moco.teacher[0]
    vicreg = make_method(config(*RESOLVED), 3)
    with pytest.raises(ConfigError, match="no teacher backbone; valid: auto, student"):
        eval_backbone(vicreg, "teacher")


# a supervised run on half the labels, evaluated on 128 training images
HALF_LABELS = ["method.label_fraction=0.5", "train.epochs=1", "train.optimizer=sgd"]
HALF_LABELS += ["train.lr=0.1", "data.limit=null", "eval.train_limit=128"]


def test_a_fraction_trained_run_is_evaluated_with_its_own_labels(tmp_path: Path) -> None:
    """A supervised run on half the labels: its kNN bank holds only the images whose labels it
    trained on (like-for-like with its head), and the records say which backbone."""
    cfg = method_config(
        "supervised",
        *HALF_LABELS,
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=true",
        "eval.compare_pixels=false",
    )
    results = pretrain(cfg, tmp_path / "run")
    knn = [r for r in results["evals"] if r["protocol"] == "knn"]
    assert {r["init"] for r in knn} == {"pretrained", "random"}
    seen = set(np.load(tmp_path / "run" / "labelled_images.npy").tolist())
    train, _ = synthetic_splits(cfg)
    in_bank = sum(f in seen for f in train.fingerprints().tolist())
    assert 0 < in_bank < len(train)
    assert all(r["n_train"] == in_bank for r in knn)
    assert next(r for r in knn if r["init"] == "pretrained")["backbone"] == "student"


def test_a_joint_runs_monitor_sees_only_its_labelled_fraction() -> None:
    from selfsup.run.callbacks import knn_monitor

    cfg = config("eval.monitor_limit=100", *RESOLVED)
    train, _ = synthetic_splits(cfg)
    masked = torch.where(train.labels == 0, train.labels, torch.full_like(train.labels, -1))
    backbone = tiny_backbone()
    only_zeros = knn_monitor(cfg, train, CPU, masked)(backbone, 1)
    assert only_zeros["monitor_knn_top1"] == 1.0  # every bank and query label is class 0
    everything = knn_monitor(cfg, train, CPU)(backbone, 1)
    assert everything["monitor_knn_top1"] < 1.0


def test_a_fine_tuned_head_gets_its_own_lr_as_vicregs_evaluate_py() -> None:
    """``eval.finetune.head_lr_scale``: the head's groups carry the scale, the backbone's none;
    the loop multiplies each group's scheduled lr by it."""
    from selfsup.methods.supervised import Classifier

    model = Classifier(tiny_backbone(), [], 3, head_lr_scale=10.0)
    groups = model.param_groups(0.0)
    head = {id(p) for p in model.head.parameters()}
    for g in groups:
        in_head = {id(p) in head for p in g["params"]}
        assert len(in_head) == 1  # no group mixes head and backbone
        assert g["lr_scale"] == (10.0 if in_head.pop() else 1.0)
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))
    plain = Classifier(tiny_backbone(), [], 3).param_groups(0.0)
    assert all("lr_scale" not in g for g in plain)


def test_published_presets_are_valid_configs_and_unknown_names_are_refused() -> None:
    from selfsup.evaluate.presets import EVAL_PRESETS, preset_overrides

    for name, (source, _) in EVAL_PRESETS.items():
        assert "facebookresearch/vicreg" in source
        cfg = load_config(None, [*TINY, *preset_overrides(name)])
        assert cfg.eval.min_steps == 0
    semi = load_config(None, [*TINY, *preset_overrides("vicreg-semi-1pct")]).eval
    assert semi.finetune.lrs == [0.03] and semi.finetune.head_lr_scale * 0.03 == pytest.approx(0.08)
    with pytest.raises(ConfigError, match="valid: vicreg-linear"):
        preset_overrides("dino-linear")


def test_a_fraction_trained_runs_finetune_uses_the_whole_split_like_every_run(
    tmp_path: Path,
) -> None:
    """Issue #24.4: the labelled-fraction restriction (right for its kNN bank / probe) also
    shrank the split of finetune, so "finetune 10%" of a 10%-label run trained on 1% of the
    images, other ones than the SSL runs' "finetune 10%"."""
    cfg = method_config(
        "supervised",
        *HALF_LABELS,
        "eval.protocols=[knn,finetune]",
        "eval.knn.k=[5]",
        "eval.finetune.fractions=[0.25]",
        "eval.finetune.epochs=1",
        "eval.finetune.lrs=[0.05]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
    )
    results = pretrain(cfg, tmp_path / "run")
    train, _ = synthetic_splits(cfg)
    knn = next(r for r in results["evals"] if r["protocol"] == "knn")
    finetune = next(r for r in results["evals"] if r["protocol"] == "finetune")
    assert knn["n_train"] < len(train)  # the bank: the images whose labels it trained on
    assert finetune["n_train"] == len(train)  # the fractions of the whole split, as any run's


def test_records_say_how_many_labelled_images_chose_each_hyper_parameter() -> None:
    """Issue #24.5/7: the probe's penalty and a trained evaluation's lr were chosen on
    held-out labelled images whose number no record gave (for the 1% arm: 10x the training
    labels)."""
    from selfsup.evaluate.linear import select_and_fit_linear

    feats, labels = torch.randn(200, 8), torch.arange(200) % 4
    _, choice = select_and_fit_linear(feats, labels, 4, l2s=[1.0, 0.01], val_fraction=0.1)
    assert choice["n_val"] == 20
    _, single = select_and_fit_linear(feats, labels, 4, l2s=[1.0])
    assert single["n_val"] == 0 and single["val_top1"] is None


# --- the ViT's linear-probe feature: DINO's last four CLS tokens (issue #24.7a) --------------


def vit_context(tmp_path: Path, *overrides: str) -> tuple[EvalContext, nn.Module, ImageArray]:
    cfg = config("backbone.name=vit_tiny_p4", "train.precision=fp32", *overrides)
    train, _ = synthetic_splits(cfg)
    train = train.subset(torch.arange(40))
    torch.manual_seed(0)
    vit = build_backbone(cfg.backbone, in_channels=3, image_size=16)
    mean, std = channel_stats(train.images)
    ctx = EvalContext("synthetic", train, 10, 16, mean, std, 3, CPU, 0, cfg.eval, cfg, tmp_path)
    return ctx, vit, train


def test_a_vits_probes_read_the_last_four_cls_tokens_and_knn_the_last(tmp_path: Path) -> None:
    """DINO eval_linear.py (--n_last_blocks 4 for ViT-Small) feeds its linear classifier the
    CLS tokens of the last 4 blocks; eval_knn.py keeps the final CLS. The probe's features are
    4 x 192 wide, the last 192 of them the kNN feature."""
    ctx, vit, train = vit_context(tmp_path)
    assert ctx.cfg.vit_last_blocks == 4 and not ctx.cfg.vit_avgpool
    knn = ctx.features(vit, train)
    probe = ctx.features(vit, train, probe=True)
    assert knn.shape == (40, 192) and probe.shape == (40, 4 * 192)
    torch.testing.assert_close(probe[:, -192:], knn)
    x = make_views(train.images, [eval_view(16, ctx.mean, ctx.std)], torch.Generator())[0]
    with torch.no_grad():
        torch.testing.assert_close(probe, vit.eval().forward_last_blocks(x, 4))
    one, _, _ = vit_context(tmp_path, "eval.vit_last_blocks=1")
    assert torch.equal(one.features(vit, train, probe=True), one.features(vit, train))


def test_linear_aug_trains_its_head_on_the_probe_feature(tmp_path: Path, monkeypatch) -> None:
    ctx, vit, _ = vit_context(tmp_path, "eval.vit_avgpool=true", "eval.min_steps=1")
    trained = []
    real = protocols.train_choosing_lr

    def spy(ctx, backbone, *args, **kw):
        trained.append(backbone)
        return real(ctx, backbone, *args, **kw)

    monkeypatch.setattr(protocols, "train_choosing_lr", spy)
    protocols.linear_aug_protocol(vit, ctx)
    (net,) = trained
    assert net.num_features == (4 + 1) * 192  # the 4 CLS tokens and the mean patch token
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), vit.eval().forward_last_blocks(x, 4, True))


def test_records_say_which_vit_feature_and_resnets_keep_their_settings(tmp_path: Path) -> None:
    """``eval.vit_last_blocks`` is part of a ViT run's probe records' settings (a table then
    labels 1 and 4 apart); kNN records and every record of a ResNet run keep the settings (and
    ids) they had, as does ``eval.vit_last_blocks=1``, the feature before it existed."""
    from selfsup.evaluate.table import eval_settings, settings_id

    limits = ("eval.train_limit=60", "eval.test_limit=20")
    cfg = config("backbone.name=vit_tiny_p4", *limits)
    splits = {"synthetic": synthetic_splits(cfg)}
    torch.manual_seed(0)
    vit = build_backbone(cfg.backbone, in_channels=3, image_size=16)
    records = {r["protocol"]: r for r in evaluate(vit, cfg, ["knn", "linear"], tmp_path, splits)}
    assert records["linear"]["settings"]["vit_last_blocks"] == 4
    assert "vit_avgpool" not in records["linear"]["settings"]  # False: as before
    assert "vit_last_blocks" not in records["knn"]["settings"]
    for protocol in ("linear", "linear-aug", "pseudo-label"):
        before = eval_settings(protocol, cfg.eval)  # a ResNet run: no ViT keys
        assert "vit_last_blocks" not in before
        old = config("backbone.name=vit_tiny_p4", "eval.vit_last_blocks=1", *limits).eval
        assert settings_id(eval_settings(protocol, old, vit=True)) == settings_id(before)
    ids = settings_id(eval_settings("linear", cfg.eval, vit=True))
    assert records["linear"]["settings_id"] == ids  # what the study runner looks for


def test_too_many_vit_blocks_is_a_config_error_naming_the_depth(tmp_path: Path) -> None:
    ctx, vit, train = vit_context(tmp_path, "eval.vit_last_blocks=13")
    with pytest.raises(ConfigError, match=r"eval\.vit_last_blocks=13.*12 blocks"):
        ctx.features(vit, train, probe=True)
    resnet = tiny_backbone()  # a ResNet ignores it: its probe reads its pooled feature
    assert torch.equal(ctx.features(resnet, train, probe=True), ctx.features(resnet, train))


def test_records_of_imagenet_size_views_say_they_were_centre_cropped(tmp_path: Path) -> None:
    """From 112 px the evaluation view is Resize(size / 0.875) + CenterCrop(size) (issue
    #24.7b): those records carry ``eval_center_crop`` in their settings (another settings id
    than a whole-image evaluation's); smaller views' settings are unchanged."""
    from selfsup.evaluate.table import eval_settings

    cfg = config("eval.train_limit=40", "eval.test_limit=10", "eval.knn.k=[5]")
    splits = {"synthetic": synthetic_splits(cfg)}
    big = load_eval_splits("synthetic", cfg.eval, root=None, download=False, image_size=128)
    knn = evaluate(tiny_backbone(), cfg, ["knn"], tmp_path, splits)[0]
    assert "eval_center_crop" not in knn["settings"]
    assert knn["settings"] == eval_settings("knn", cfg.eval)
    big_knn = evaluate_backbone(
        tiny_backbone(),
        cfg.eval,
        datasets=["synthetic"],
        protocols=["knn"],
        size=112,
        init="pretrained",
        root=None,
        download=False,
        image_size=128,
        seed=0,
        device=CPU,
        splits={"synthetic": big},
        run_cfg=cfg,
        work_dir=tmp_path,
    )[0]
    assert big_knn["settings"] == {**knn["settings"], "eval_center_crop": 0.875}
    assert big_knn["settings"] == eval_settings("knn", cfg.eval, center_crop=0.875)
