"""Pseudo-labelling with the pool drawn from a separate unlabeled split (``eval.pseudo.pool=
unlabeled``) on files in STL-10's binary format, and the teacher trained from scratch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from fakedata import stl_marker_image, write_stl10
from selfsup.backbones import build_backbone
from selfsup.config import Config, load_config
from selfsup.data.array import ImageArray
from selfsup.errors import ConfigError
from selfsup.evaluate import semisupervised
from selfsup.evaluate.harness import evaluate_backbone
from selfsup.evaluate.table import eval_settings, settings_id
from tiny import TINY

CPU = torch.device("cpu")
N_TRAIN, N_UNLABELED = 20, 50
RATIOS = [0.0, 0.5, 2.0, 10.0]  # pools of 0, 10, 40 and (capped) 50 unlabeled images


def config(root: Path, *overrides: str) -> Config:
    return load_config(
        None,
        [
            *TINY,
            "train.device=cpu",
            f"data.root={root}",
            "eval.finetune.epochs=1",
            "eval.finetune.batch_size=16",
            "eval.linear.l2=[0.01]",
            "eval.pseudo.pool=unlabeled",
            f"eval.pseudo.ratios={RATIOS}",
            "eval.pseudo.threshold=0.6",
            *overrides,
        ],
    )


def fingerprints(images: np.ndarray) -> set[int]:
    data = ImageArray(torch.from_numpy(images), torch.zeros(len(images), dtype=torch.int64))
    return set(data.fingerprints().tolist())


def evaluate(cfg: Config, work: Path, backbone: nn.Module) -> list[dict]:
    return evaluate_backbone(
        backbone,
        cfg.eval,
        datasets=["stl10"],
        protocols=["pseudo-label"],
        size=16,
        init="pretrained",
        root=cfg.data.root,
        download=False,
        image_size=None,
        seed=0,
        device=CPU,
        run_cfg=cfg,
        work_dir=work,
    )


def tiny_backbone(cfg: Config, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_backbone(cfg.backbone, in_channels=3, image_size=16)


@pytest.fixture(scope="module")
def stl(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("data")
    files = write_stl10(root, n_train=N_TRAIN, n_test=10, n_unlabeled=N_UNLABELED, seed=3)
    return SimpleNamespace(root=root, files=files)


@pytest.fixture(scope="module")
def pooled(stl: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The protocol with the probe teacher; what the teacher saw, what it kept and what joined
    the labelled images are recorded."""
    cfg = config(stl.root)
    seen, joined = [], []
    real_select, real_join = semisupervised.select_confident, semisupervised._join

    def spy_select(probs: torch.Tensor, threshold: float):
        keep, pseudo = real_select(probs, threshold)
        seen.append((probs, threshold, keep))
        return keep, pseudo

    def spy_join(labelled: ImageArray, extra: ImageArray, labels: torch.Tensor) -> ImageArray:
        joined.append((labelled, extra))
        return real_join(labelled, extra, labels)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semisupervised, "select_confident", spy_select)
        mp.setattr(semisupervised, "_join", spy_join)
        records = evaluate(cfg, tmp_path_factory.mktemp("eval"), tiny_backbone(cfg))
    return SimpleNamespace(records=records, seen=seen, joined=joined)


def test_every_labelled_image_is_kept_and_the_pool_has_ratio_times_as_many(
    pooled: SimpleNamespace,
) -> None:
    recs = pooled.records
    # issue #24.3: the pool (50 images) cannot give 1:10 of 20 labelled images: the arm is
    # named by the ratio it got, the asked one kept
    assert [r["ratio"] for r in recs] == [*RATIOS[:-1], 2.5]
    assert recs[-1]["ratio_requested"] == 10.0
    assert all("ratio_requested" not in r for r in recs[:-1])
    for r in recs:
        asked = r.get("ratio_requested", r["ratio"])
        assert r["pool"] == "unlabeled" and r["pool_split"] == "unlabeled"
        assert r["n_labelled"] == N_TRAIN  # one lr: nothing held out, every image kept
        assert r["n_unlabeled"] == min(N_UNLABELED, round(asked * N_TRAIN))
        assert r["fraction"] is None and r["pseudo_label_acc"] is None  # the pool has no labels
        assert 0 <= r["top1"] <= 1 and 0 <= r["f1_macro"] <= 1
    assert [r["n_unlabeled"] for r in recs] == [0, 10, 40, 50]


def test_the_pool_comes_only_from_the_unlabeled_split(
    pooled: SimpleNamespace, stl: SimpleNamespace
) -> None:
    marker = fingerprints(stl_marker_image()[None])  # image 0 of every fake split
    unlabeled = fingerprints(stl.files["unlabeled"])
    train = fingerprints(stl.files["train"][0])
    test = fingerprints(stl.files["test"][0])
    assert pooled.joined, "no pool image passed the threshold: the test checks nothing"
    for labelled, extra in pooled.joined:
        assert set(labelled.fingerprints().tolist()) == train
        assert set(extra.fingerprints().tolist()) <= unlabeled
        assert not set(extra.fingerprints().tolist()) & ((train | test) - marker)


def test_images_kept_are_those_at_or_above_the_threshold(pooled: SimpleNamespace) -> None:
    with_pool = [r for r in pooled.records if r["n_unlabeled"]]
    assert len(pooled.seen) == len(with_pool)
    counts = []
    for (probs, threshold, keep), r in zip(pooled.seen, with_pool, strict=True):
        assert threshold == 0.6 and len(probs) == r["n_unlabeled"]
        assert torch.equal(keep, probs.max(1).values >= threshold)
        assert r["n_pseudo"] == int(keep.sum())
        assert r["kept_share"] == pytest.approx(r["n_pseudo"] / r["n_unlabeled"])
        counts.append(r["n_pseudo"])
    assert 0 < sum(counts) < sum(r["n_unlabeled"] for r in with_pool)  # some kept, some not
    joined = [len(extra) for _, extra in pooled.joined]
    assert joined == [n for n in counts if n]


def test_scratch_teacher_is_trained_from_a_random_init_on_the_labelled_images(
    stl: SimpleNamespace, tmp_path: Path
) -> None:
    cfg = config(stl.root, "eval.pseudo.teacher=scratch", "eval.pseudo.ratios=[1.0]")
    backbone = tiny_backbone(cfg, seed=123)  # stands for a pretrained backbone
    calls = []
    real = semisupervised.train_choosing_lr

    def spy(ctx, net, data, val, **kw):
        calls.append(SimpleNamespace(net=net, data=data, **kw))
        return real(ctx, net, data, val, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semisupervised, "train_choosing_lr", spy)
        (rec,) = evaluate(cfg, tmp_path, backbone)
    assert rec["teacher"] == "scratch" and rec["n_unlabeled"] == N_TRAIN
    teacher, student = calls
    assert teacher.name.startswith("pseudo-teacher-scratch") and not teacher.frozen
    assert len(teacher.data) == N_TRAIN and teacher.data.has_labels
    random_init = tiny_backbone(cfg, seed=0).state_dict()  # the evaluation seed's init
    state = teacher.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in random_init.items())
    assert any(not torch.equal(state[k], v) for k, v in backbone.state_dict().items())
    assert student.net is backbone and len(student.data) == N_TRAIN + rec["n_pseudo"]


def test_finetuned_teacher_starts_from_the_evaluated_backbone(
    stl: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(stl.root, "eval.pseudo.teacher=finetuned", "eval.pseudo.ratios=[1.0]")
    backbone = tiny_backbone(cfg, seed=123)
    nets = []
    real = semisupervised.train_choosing_lr

    def spy(ctx, net, data, val, **kw):
        nets.append((kw["name"], net))
        return real(ctx, net, data, val, **kw)

    monkeypatch.setattr(semisupervised, "train_choosing_lr", spy)
    (rec,) = evaluate(cfg, tmp_path, backbone)
    assert rec["teacher"] == "finetuned"
    assert [n.startswith("pseudo-teacher-finetuned") for n, _ in nets] == [True, False]
    assert all(net is backbone for _, net in nets)


@pytest.mark.parametrize("split", ["test", "train", "train+unlabeled"])
def test_a_pool_split_with_training_or_test_images_is_refused(
    stl: SimpleNamespace, tmp_path: Path, split: str
) -> None:
    cfg = config(stl.root, f"eval.pseudo.pool_split={split}", "eval.pseudo.ratios=[1.0]")
    with pytest.raises(ConfigError, match="pool_split"):
        evaluate(cfg, tmp_path, tiny_backbone(cfg))


def test_new_settings_change_ids_only_when_set(stl: SimpleNamespace) -> None:
    """Records written before eval.classes / eval.pseudo.pool existed keep their settings ids:
    at their old behaviour the new keys are left out (and teacher pretrained is the old null)."""
    default = load_config(None, []).eval
    settings = eval_settings("pseudo-label", default)
    assert settings["pseudo.teacher"] is None and "pseudo.fraction" in settings
    assert not {"classes", "pseudo.pool", "pseudo.pool_split"} & set(settings)
    ids = {
        settings_id(eval_settings("pseudo-label", load_config(None, list(o)).eval))
        for o in [
            (),
            ("eval.pseudo.teacher=null",),
            ("eval.classes=0-4",),
            ("eval.pseudo.pool=unlabeled",),
            ("eval.pseudo.teacher=scratch",),
        ]
    }
    assert len(ids) == 4  # null and pretrained are one teacher
    unlabeled = eval_settings("pseudo-label", config(stl.root).eval)
    assert unlabeled["pseudo.pool_split"] == "unlabeled" and "pseudo.fraction" not in unlabeled


def test_every_student_takes_the_steps_of_the_largest_one(pooled: SimpleNamespace) -> None:
    """Issue #24.3: with fixed epochs the 1:10 student took 5x and more the steps of 1:0, so
    its gain mixed data with compute; eval.pseudo.steps=equal gives every arm the budget of the
    largest student set (finetune.epochs=1 of it; smaller sets more epochs)."""
    recs = pooled.records

    def per_epoch(n: int) -> int:
        return max(1, n // min(16, n))  # eval.finetune.batch_size=16

    sizes = [r["n_labelled"] + r["n_pseudo"] for r in recs]
    budget = per_epoch(max(sizes))
    assert budget > 1, "the largest student set must span several steps, or nothing is tested"
    for r, n in zip(recs, sizes, strict=True):
        assert budget <= r["steps"] < budget + per_epoch(n)
    assert recs[0]["epochs"] == budget  # 20 labelled images: one step an epoch
