"""LFW in torchvision's layout, pairs parsing, 10-fold verification and ``selfsup faces``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.data.lfw import keep_people, load_lfw, read_pairs, split_by_image
from selfsup.data.sources import load_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.evaluate.verification import best_threshold, verification_accuracy

PEOPLE = {"Ann_Lee": 6, "Bob_Stone": 5, "Cid_Moreau": 4, "Dee_Park": 2, "Eve_Ito": 1}


def make_lfw(root, people=PEOPLE, side: int = 40, unseen: bool = False):
    """root/lfw-py/lfw_funneled/<Name>/<Name>_000i.jpg: each person a colour and a stripe
    orientation, plus noise; and a pairs.txt of 10 folds of one matched + one mismatched pair
    (``unseen``: and a matched + mismatched pair of the people with 1-2 images)."""
    base = root / "lfw-py"
    rng = np.random.default_rng(0)
    for p, (name, n) in enumerate(people.items()):
        folder = base / "lfw_funneled" / name
        folder.mkdir(parents=True)
        colour = np.array([60 + 40 * p, 200 - 30 * p, 90 + 25 * (p % 3)])
        stripes = (np.arange(side) // (3 + p) % 2)[:, None] * 60
        for i in range(1, n + 1):
            img = (
                colour
                + (stripes if p % 2 else stripes.T)[..., None]
                + rng.normal(0, 12, (side, side, 3))
            )
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                folder / f"{name}_{i:04d}.jpg"
            )
    lines = [f"10\t{2 if unseen else 1}"]
    for fold in range(10):  # each fold: its matched pairs, then its mismatched pairs
        lines.append(f"Ann_Lee\t{1 + fold % 5}\t{2 + fold % 5}")
        if unseen:
            lines.append("Dee_Park\t1\t2")
        lines.append(f"Eve_Ito\t1\tBob_Stone\t{1 + fold % 5}")
        if unseen:
            lines.append("Dee_Park\t2\tEve_Ito\t1")
    (base / "pairs.txt").write_text("\n".join(lines) + "\n")
    return base


def test_read_pairs_both_line_formats(tmp_path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("2\t1\nA_B\t1\t3\nA_B\t2\tC_D\t4\nC_D\t1\t2\nE_F\t7\tA_B\t1\n")
    pairs = read_pairs(path)
    assert [(p.fold, p.first, p.second, p.same) for p in pairs] == [
        (0, ("A_B", 1), ("A_B", 3), True),
        (0, ("A_B", 2), ("C_D", 4), False),
        (1, ("C_D", 1), ("C_D", 2), True),
        (1, ("E_F", 7), ("A_B", 1), False),
    ]
    path.write_text("1\t1\nA_B\t1\nA_B\t2\tC_D\t4\n")
    with pytest.raises(DataError, match="line 2: expected 'name i j'"):
        read_pairs(path)
    path.write_text("10\t300\nA_B\t1\t2\n")
    with pytest.raises(DataError, match="6000 lines"):
        read_pairs(path)


def test_best_threshold_separates_when_possible() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2, 0.6])
    same = torch.tensor([1, 1, 1, 0, 0, 0])
    assert best_threshold(scores, same) == pytest.approx(0.65)


def test_ten_fold_threshold_comes_from_the_other_nine_folds() -> None:
    """Nine folds separate at ~0.5; fold 0's scores are all low, so the threshold from the other
    folds calls every pair of fold 0 "different": 50% there (its own best would give 100%)."""
    scores, same, folds = [], [], []
    for k in range(10):
        pos, neg = ([0.30, 0.32], [0.20, 0.22]) if k == 0 else ([0.8, 0.9], [0.1, 0.2])
        scores += [*pos, *neg]
        same += [1, 1, 0, 0]
        folds += [k] * 4
    res = verification_accuracy(torch.tensor(scores), torch.tensor(same), torch.tensor(folds))
    assert res["folds"] == [0.5] + [1.0] * 9
    assert res["mean"] == pytest.approx(0.95)
    assert res["std"] == pytest.approx(float(np.std([0.5] + [1.0] * 9)))
    assert 0.32 < res["thresholds"][0] < 0.8  # chosen without fold 0
    assert res["cross_validated"] and res["n_pairs"] == 40


def test_min_images_filter_and_seeded_split(tmp_path) -> None:
    people = {n: list(range(c)) for n, c in PEOPLE.items()}
    assert list(keep_people(people, 4)) == ["Ann_Lee", "Bob_Stone", "Cid_Moreau"]
    with pytest.raises(DataError, match="the most is 6"):
        keep_people(people, 7)
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    train, test = split_by_image(labels, 0.2, seed=0)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(17))
    assert [int((labels[test] == c).sum()) for c in range(3)] == [2, 1, 1]
    assert all(int((labels[train] == c).sum()) >= 1 for c in range(3))
    again = split_by_image(labels, 0.2, seed=0)
    other = split_by_image(labels, 0.2, seed=1)
    assert torch.equal(again[1], test) and not torch.equal(other[1], test)


def test_lfw_source_reads_the_torchvision_layout(tmp_path) -> None:
    make_lfw(tmp_path)
    train = load_dataset("lfw:4", "train", root=tmp_path, image_size=16)
    test = load_dataset("lfw:4", "test", root=tmp_path, image_size=16)
    assert train.classes == ["Ann_Lee", "Bob_Stone", "Cid_Moreau"]
    assert len(train) + len(test) == 6 + 5 + 4 and train.images.shape[1:] == (3, 16, 16)
    assert not set(train.fingerprints().tolist()) & set(test.fingerprints().tolist())
    assert len(load_lfw(tmp_path, min_images=1, image_size=16).images.classes) == 5
    with pytest.raises(ConfigError, match="lfw:MIN"):
        load_dataset("lfw:many", "train", root=tmp_path)
    with pytest.raises(DataError, match="lfw-py/lfw_funneled"):
        load_dataset("lfw", "train", root=tmp_path / "nowhere")


def test_faces_workflow_end_to_end(tmp_path, capsys) -> None:
    from selfsup.backbones import build_backbone
    from selfsup.config import load_config

    make_lfw(tmp_path / "data", unseen=True)
    tiny = ["backbone.name=small_resnet", "backbone.depths=[1,1]", "backbone.widths=[8,16]"]
    torch.manual_seed(0)
    src = build_backbone(load_config(None, tiny).backbone, in_channels=3, image_size=16)
    ckpt = tmp_path / "model.pth"  # a VICReg-style full checkpoint
    torch.save(
        {"epoch": 1, "model": {f"module.backbone.{k}": v for k, v in src.state_dict().items()}},
        ckpt,
    )
    out = tmp_path / "run"
    args = [
        "faces",
        "--weights",
        str(ckpt),
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        str(out),
        "--min-images",
        "4",
        "--queries",
        "2",
        "-k",
        "3",
        *tiny,
        "data.image_size=16",
        "eval.finetune.epochs=2",
        "eval.finetune.lrs=[0.05]",
        "eval.finetune.batch_size=8",
        "eval.min_steps=0",
        "eval.knn.k=[3]",
        "train.device=cpu",
        "train.progress=false",
        "train.log_every=1",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "loaded backbone.weights=" in captured.err
    res = json.loads((out / "results.json").read_text())
    assert res["n_people"] == 3 and res["n_train"] + res["n_test"] == 15
    # issue #24.2: an official (ImageNet-trained) checkpoint sees ImageNet's statistics, not
    # LFW's, and the record says which
    norm = res["normalisation"]
    assert norm["mean"] == [0.485, 0.456, 0.406] and norm["std"] == [0.229, 0.224, 0.225]
    assert "ImageNet" in norm["source"]
    for init in ("pretrained", "finetuned"):
        for value in res["identification"][init].values():
            assert 0.0 <= value <= 1.0
        ver = res["verification"][init]
        assert 0.0 <= ver["mean"] <= 1.0 and len(ver["folds"]) == 10
        # issue #24.1: the headline excludes the 20 pairs showing Ann or Bob (fine-tuned on)
        assert ver["pairs_seen_in_finetuning"] == 20 and ver["n_pairs"] == 40
        unseen = ver["unseen_people"]
        assert unseen["n_pairs"] == 20 and len(unseen["folds"]) == 10
        assert (out / "plots" / f"faces-{init}.png").stat().st_size > 0
    assert set(res["identification"]["pretrained"]) == {"knn1_top1", "knn3_top1"}
    assert 0.0 <= res["identification"]["classifier_top1"] <= 1.0
    assert (out / "config.yaml").is_file()
    assert "verification (finetuned), people not fine-tuned on:" in captured.out
    from selfsup.studies.runner import face_records

    protocols = {r["protocol"] for r in face_records(res)}
    unseen = "finetuned verification, unseen people"
    assert {"verification, unseen people", unseen, "finetuned verification, all pairs"} <= (
        protocols
    )
    unseen_rec = [r for r in face_records(res) if r["protocol"] == unseen]
    assert unseen_rec[0]["top1"] == res["verification"]["finetuned"]["unseen_people"]["mean"]


def test_faces_without_weights_or_pairs_is_a_random_init_baseline(tmp_path, capsys) -> None:
    base = make_lfw(tmp_path / "data")
    (base / "pairs.txt").unlink()
    out = tmp_path / "run"
    args = [
        "faces",
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        str(out),
        "--min-images",
        "5",
        "backbone.name=small_resnet",
        "backbone.depths=[1]",
        "backbone.widths=[8]",
        "data.image_size=16",
        "eval.finetune.epochs=1",
        "eval.finetune.lrs=[0.05]",
        "eval.min_steps=0",
        "eval.knn.k=[3]",
        "train.device=cpu",
        "train.progress=false",
    ]
    assert main(args) == 0
    assert "verification skipped" in capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["weights"] is None and res["verification"] is None
    assert set(res["identification"]) == {"random-init", "finetuned", "classifier_top1"}
    assert (out / "plots" / "faces-random-init.png").is_file()


def test_torchvision_download_only_when_asked(tmp_path, monkeypatch) -> None:
    from selfsup.data import lfw

    calls = []

    def fake_lfw_people(root, download):  # writes torchvision's layout, as its download would
        calls.append(download)
        make_lfw(tmp_path / "ok")

    monkeypatch.setattr(lfw, "LFWPeople", fake_lfw_people)
    with pytest.raises(DataError, match="unpack them into"):
        load_lfw(tmp_path / "ok", image_size=8)
    assert calls == []
    assert len(load_lfw(tmp_path / "ok", min_images=4, image_size=8, download=True).files) == 15
    assert calls == [True]

    def offline(root, download):
        raise ValueError("LFW dataset is no longer available for automatic download")

    monkeypatch.setattr(lfw, "LFWPeople", offline)
    with pytest.raises(DataError, match=r"downloading LFW through torchvision .* failed"):
        load_lfw(tmp_path / "empty", download=True)
