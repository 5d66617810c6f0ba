"""``selfsup pretrain`` / ``selfsup eval`` end to end, in-process, on tiny data."""

from __future__ import annotations

import json

import pytest
import yaml

from selfsup.cli import main
from selfsup.data import sources
from selfsup.train import loop
from tiny import TINY

NEW = ["--config", "defaults"]  # a new run from the built-in defaults (tiny.py shrinks them)

FMNIST = [
    "data.dataset=fashion-mnist",
    "data.limit=96",
    "train.batch_size=32",
    "eval.train_limit=64",
    "eval.test_limit=32",
]


def pretrain(out, *extra: str, resume: bool = False) -> int:
    args = ["pretrain", "--out", str(out)] + (["--resume"] if resume else ["--config", "defaults"])
    return main(args + TINY + list(extra))


def test_pretrain_synthetic_writes_run_directory(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert pretrain(out) == 0
    for name in ("config.yaml", "env.json", "metrics.jsonl", "checkpoints/last.pt", "results.json"):
        assert (out / name).is_file(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["views"]["size"] == 16
    assert len(cfg["data"]["mean"]) == 3  # resolved from the data
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "vicreg" and results["backbone"] == "small_resnet"
    assert results["pretrain_dataset"] == "synthetic"
    kinds = {(r["protocol"], r.get("k"), r["init"]) for r in results["evals"]}
    assert kinds == {
        (p, k, i)
        for p, k in (("knn", 20), ("knn", 200), ("linear", None))
        for i in ("pretrained", "random", "pixels")
    }
    for r in results["evals"]:
        assert r["dataset"] == "synthetic" and 0 <= r["top1"] <= 1 and 0 <= r["f1_macro"] <= 1
        assert r["n_train"] == 256 and r["n_test"] == 128
    printed = capsys.readouterr().out
    assert "pretrained top-1 / F1" in printed and "random top-1 / F1" in printed
    assert "pixels top-1 / F1" in printed  # the trivial baseline, next to the others
    assert "against the baselines" in printed and "raw pixels" in printed
    assert str(out) in printed


def test_pretrain_fashion_mnist_from_idx_files(tmp_path, monkeypatch) -> None:
    from fakedata import write_fashion_mnist

    write_fashion_mnist(tmp_path / "fm", n_train=200, n_test=50)
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", [tmp_path / "fm"])
    out = tmp_path / "run"
    assert pretrain(out, *FMNIST, f"data.root={tmp_path / 'root'}") == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["views"]["size"] == 28 and len(cfg["data"]["mean"]) == 1
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in recs if "loss" in r]) == 2 * (96 // 32)
    results = json.loads((out / "results.json").read_text())
    assert {r["dataset"] for r in results["evals"]} == {"fashion-mnist"}


def test_interrupted_pretrain_resumes(tmp_path, monkeypatch, capsys) -> None:
    calls = {"n": 0}
    real = loop.make_views

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # second epoch, second step
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "make_views", interrupting)
    out = tmp_path / "run"
    assert pretrain(out, "train.epochs=3") == 130
    assert "--resume" in capsys.readouterr().err
    assert not (out / "results.json").exists()
    monkeypatch.setattr(loop, "make_views", real)
    assert main(["pretrain", "--out", str(out), "--resume"]) == 0
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(12))
    assert (out / "results.json").is_file()


def test_eval_on_another_dataset(tmp_path, monkeypatch) -> None:
    from fakedata import write_fashion_mnist

    out = tmp_path / "run"
    assert pretrain(out, "eval.compare_random=false") == 0
    write_fashion_mnist(tmp_path / "fm", n_train=100, n_test=40)
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", [tmp_path / "fm"])
    assert main(["eval", str(out), "--protocol", "knn", "--dataset", "fashion-mnist"]) == 0
    results = json.loads((out / "results.json").read_text())
    fm = [r for r in results["evals"] if r["dataset"] == "fashion-mnist"]
    # the bank holds 100 images: k=200 is kNN with k=100, and the record says so
    assert {r["k"] for r in fm} == {20, 100} and all(r["protocol"] == "knn" for r in fm)
    assert {str(r.get("k_requested")) for r in fm} == {"None", "[200]"}
    assert any(r["dataset"] == "synthetic" for r in results["evals"])  # earlier records kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train.epoch=3"], "valid keys at train: train.epochs"),
        (["data.dataset=cifar11"], "cifar10"),
        (["backbone.name=vgg"], "valid choices: resnet18"),
        (
            ["method.name=simclr2"],
            "valid choices: barlow_twins, byol, dino, dino_twins, isd, moco, simclr, supervised, "
            "vicreg",
        ),
        (["eval.protocols=[knn,svm]"], "valid choices: finetune, knn, linear, linear-aug"),
        (["train.optimizer=adam"], "lars, adamw, sgd"),
    ],
)
def test_bad_input_fails_fast_with_choices(tmp_path, capsys, args, message) -> None:
    assert pretrain(tmp_path / "run", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert pretrain(out) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert main(["pretrain", "--out", str(tmp_path / "none"), "--resume"]) == 2


def test_eval_of_damaged_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert pretrain(out, "train.epochs=1", "eval.protocols=[knn]") == 0
    (out / "checkpoints" / "last.pt").write_bytes(b"garbage")
    assert main(["eval", str(out)]) == 2
    assert "damaged" in capsys.readouterr().err


def test_supervised_and_joint_runs_then_one_table(tmp_path, capsys) -> None:
    """The baselines are run directories like any other, with their own classifier's record,
    and ``selfsup table`` puts them side by side."""
    quick = [*TINY, "eval.protocols=[knn]", "eval.knn.k=[20]", "eval.compare_random=false"]
    sup, joint, ssl = tmp_path / "sup", tmp_path / "joint", tmp_path / "ssl"
    no_ssl = [o for o in quick if not o.startswith("method.")]  # VICReg keys: not supervised's
    assert main(["supervised", *NEW, "--out", str(sup), *no_ssl, "method.label_fraction=0.5"]) == 0
    assert main(["joint", *NEW, "--out", str(joint), *quick, "joint.label_fraction=0.25"]) == 0
    assert pretrain(ssl, "eval.protocols=[knn]", "eval.knn.k=[20]") == 0
    cfg = yaml.safe_load((sup / "config.yaml").read_text())
    assert cfg["method"] == {"name": "supervised", "label_fraction": 0.5, "num_classes": 10}
    sup_res = json.loads((sup / "results.json").read_text())
    joint_res = json.loads((joint / "results.json").read_text())
    assert sup_res["method"] == "supervised" and joint_res["method"] == "vicreg+joint"
    (head,) = [r for r in sup_res["evals"] if r["protocol"] == "supervised"]
    assert head["init"] == "trained" and head["fraction"] == 0.5 and head["n_test"] == 128
    # issue #25.8: the supervised backbone is not called "pretrained" on the console
    printed = capsys.readouterr().out.split("run directory:")
    assert "trained (supervised) top-1" in printed[0] and "pretrained top-1" not in printed[0]
    assert "pretrained top-1" in printed[1]  # the joint run's SSL backbone is pretrained
    assert sum(map(sum, head["confusion"])) == 128
    assert [r["protocol"] for r in joint_res["evals"]].count("joint") == 1
    steps = [json.loads(line) for line in (joint / "metrics.jsonl").read_text().splitlines()]
    assert {"cross_entropy", "ssl_loss", "invariance"} <= set(steps[0])  # both losses train
    assert list((sup / "plots").glob("confusion-supervised-*.png"))
    capsys.readouterr()
    assert main(["table", str(ssl), str(sup), str(joint)]) == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip() for line in table.splitlines()[2:]}
    assert rows == {"vicreg", "supervised", "vicreg+joint"}
    assert "supervised" in table.splitlines()[0] and "joint" in table.splitlines()[0]
    assert main(["table", str(ssl), str(sup), "--paired", "--merge-seeds"]) == 0
    out = capsys.readouterr().out
    assert "Paired tests against the first run:" in out and "exact McNemar p =" in out
    assert main(["table", str(tmp_path / "nothing")]) == 2  # not a run: a clear error


def test_pseudo_label_with_a_supervised_run_as_teacher(tmp_path, capsys) -> None:
    """``eval.pseudo.teacher`` swaps the probe teacher for a supervised run's classifier; a run
    without a classifier is refused with a clear message."""
    quick = [*TINY, "eval.protocols=[knn]", "eval.knn.k=[20]", "eval.compare_random=false"]
    sup, ssl, leaky = tmp_path / "sup", tmp_path / "ssl", tmp_path / "leaky"
    no_ssl = [o for o in quick if not o.startswith("method.")]
    # a valid teacher saw only the protocol's labelled part: the same images (data.limit =
    # eval.train_limit, seed 0) and the same class-balanced fraction
    valid = ["data.limit=256", "method.label_fraction=0.25"]
    assert main(["supervised", *NEW, "--out", str(sup), *no_ssl, *valid]) == 0
    assert main(["supervised", *NEW, "--out", str(leaky), *no_ssl, "data.limit=256"]) == 0
    assert pretrain(ssl, "eval.protocols=[knn]", "eval.knn.k=[20]") == 0
    common = [
        "eval.compare_random=false",
        "eval.pseudo.ratios=[0.0,1.0]",
        "eval.pseudo.fraction=0.25",
        "eval.pseudo.threshold=0.0",  # every pool image passes: n_pseudo = n_unlabeled
        "eval.finetune.epochs=1",
        "eval.finetune.batch_size=32",
    ]
    args = ["eval", str(ssl), "--protocol", "pseudo-label", *common]
    assert main([*args, f"eval.pseudo.teacher={sup}"]) == 0
    recs = json.loads((ssl / "results.json").read_text())["evals"]
    sweep = [r for r in recs if r["protocol"] == "pseudo-label"]
    assert {r["teacher"] for r in sweep} == {str(sup)}
    (one,) = [r for r in sweep if r["ratio"] == 1.0]
    assert one["n_unlabeled"] == one["n_labelled"] == one["n_pseudo"] > 0  # ratio 1, all pass
    capsys.readouterr()
    assert main([*args, f"eval.pseudo.teacher={ssl}"]) == 2  # an SSL run has no classifier
    assert "must be a supervised or joint run" in capsys.readouterr().err
    # a teacher trained on all the labels has seen the pool's: refused, not silently inflated
    assert main([*args, f"eval.pseudo.teacher={leaky}"]) == 2
    assert "was trained on the labels of" in capsys.readouterr().err


QUICK = [
    "train.epochs=1",
    "eval.protocols=[knn]",
    "eval.knn.k=[20]",
    "eval.compare_random=false",
    "eval.compare_pixels=false",
]


def test_finished_run_is_refused_unless_overwritten(tmp_path, capsys) -> None:
    """A finished run is kept unless --overwrite; --overwrite removes it only once the new
    config and data are valid, and keeps files the run did not write."""
    out = tmp_path / "run"
    assert pretrain(out, *QUICK) == 0
    (out / "notes.txt").write_text("mine")
    old = (out / "results.json").read_text()
    capsys.readouterr()
    assert pretrain(out, *QUICK) == 2
    err = capsys.readouterr().err
    assert "finished run" in err and "--overwrite" in err and "--resume" in err
    overwrite = ["pretrain", *NEW, "--out", str(out), "--overwrite", *TINY, *QUICK]
    for bad in ("train.lr=-1", "data.dataset=cifar11", "method.name=nope"):
        assert main([*overwrite, bad]) == 2, bad
        assert "Traceback" not in capsys.readouterr().err
        assert (out / "results.json").read_text() == old  # nothing removed
    assert main([*overwrite, "--resume"]) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert main([*overwrite, "train.epochs=2"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 2
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2 * 128 // 32))  # the new run's steps only
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_never_empties_a_directory_without_a_run(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["pretrain", *NEW, "--out", str(out), "--overwrite", *TINY, *QUICK]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "change", ["backbone.widths=[8,32]", "backbone.depths=[2,1]", "method.projector=32-16"]
)
def test_resume_with_another_architecture_is_refused(tmp_path, capsys, change) -> None:
    out = tmp_path / "run"
    assert pretrain(out, *QUICK) == 0
    saved = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", change]) == 2
    err = capsys.readouterr().err
    assert change.split("=")[0] in err and "Traceback" not in err
    assert (out / "config.yaml").read_text() == saved  # the run is left as it was
    from selfsup.checkpoint import load_checkpoint
    from selfsup.config import config_to_dict, load_config
    from selfsup.errors import CheckpointError

    ckpt_path = out / "checkpoints" / "last.pt"  # fit(resume=True) itself refuses it too
    with pytest.raises(CheckpointError, match=change.split("=")[0].replace(".", r"\.")):
        changed = config_to_dict(load_config(out / "config.yaml", [change]))
        loop.check_compatible(load_checkpoint(ckpt_path), changed, ckpt_path)


def test_resume_refuses_a_changed_config_and_names_each_difference(tmp_path, capsys) -> None:
    """Issue #22: --resume with data.limit=... seed=... train.lr=... trained on settings the
    run never used and rewrote config.yaml with them; --config was silently ignored."""
    out = tmp_path / "run"
    assert pretrain(out, *QUICK) == 0
    saved = (out / "config.yaml").read_text()
    metrics = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    resume = ["pretrain", "--out", str(out), "--resume"]
    changes = ["data.limit=96", "train.batch_size=16", "seed=7", "train.lr=5"]
    assert main([*resume, *changes, "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    shown = ["data.limit: 128 -> 96", "train.batch_size: 32 -> 16", "seed: 0 -> 7"]
    for line in [*shown, "train.lr: 0.2 -> 5.0"]:
        assert line in err, err
    assert "train.epochs:" not in err and "Traceback" not in err  # may change: not listed
    (tmp_path / "other.yaml").write_text("train:\n  lr: 5.0\n")
    assert main([*resume, "--config", str(tmp_path / "other.yaml")]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["supervised", "--out", str(out), "--resume"]) == 2  # a vicreg run
    assert "supervised" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == saved  # nothing trained or rewritten
    assert (out / "metrics.jsonl").read_text() == metrics
    allowed = ["train.epochs=2", "train.log_every=2", "train.progress=false", "eval.knn.k=[10]"]
    assert main([*resume, *allowed]) == 0  # extend the run, log and evaluate differently
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["eval"]["knn"]["k"] == [10]
