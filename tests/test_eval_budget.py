"""Issue #25.1: evaluation follows a small run's data.limit, says what it is doing, and
computes the raw-pixel baselines once (a cache keyed by everything they depend on)."""

from __future__ import annotations

import json

import pytest

from selfsup import pipeline
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.data.sources import load_dataset
from tiny import TINY

QUICK = ["eval.protocols=[knn]", "eval.knn.k=[5]", "eval.compare_random=false"]
QUICK += ["eval.train_limit=null", "eval.test_limit=64", "train.epochs=1"]


def test_a_small_run_evaluates_on_as_many_training_images_as_it_trained_on(capsys) -> None:
    data = load_dataset("synthetic", "train", image_size=16)
    cfg = pipeline.resolve(load_config(None, [*TINY, "eval.train_limit=null"]), data)
    assert cfg.data.limit == 128 and cfg.eval.train_limit == 128
    assert "evaluation uses at most 128 training images" in capsys.readouterr().err
    mine = pipeline.resolve(load_config(None, [*TINY, "eval.train_limit=1000"]), data)
    assert mine.eval.train_limit == 1000  # an explicit choice is kept
    whole = pipeline.resolve(load_config(None, [*TINY, "data.limit=null"]), data)
    assert whole.eval.train_limit == 256  # TINY's own


def test_the_evaluation_says_each_phase_and_its_result(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *TINY, *QUICK]) == 0
    err = capsys.readouterr().err
    assert "eval knn (pretrained) on synthetic: fitting on 128 training images" in err
    assert "eval knn (pixels) on synthetic: top-1" in err and "64 test images (k=5" in err


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "baselines"


def pixel_records(run) -> list[dict]:
    """The pixel records of a run, without their timings (which a recomputation changes)."""
    recs = json.loads((run / "results.json").read_text())["evals"]
    timing = ("fit_seconds", "score_seconds")
    return [{k: v for k, v in r.items() if k not in timing} for r in recs if r["init"] == "pixels"]


def test_pixel_baselines_are_computed_once_and_reused(tmp_path, cache, monkeypatch, capsys):
    calls = []
    real = pipeline.evaluate_backbone

    def counting(backbone, cfg, *, init, **kw):
        calls.append(init)
        return real(backbone, cfg, init=init, **kw)

    monkeypatch.setattr(pipeline, "evaluate_backbone", counting)
    args = ["pretrain", "--config", "defaults", *TINY, *QUICK]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert calls.count("pixels") == 1 and len(list(cache.glob("*.json"))) == 1
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b"), "method.projector=16-16"]) == 0
    assert calls.count("pixels") == 1  # another run, the same images and settings: reused
    assert "raw-pixel baselines reused" in capsys.readouterr().err
    first, again = pixel_records(tmp_path / "a"), pixel_records(tmp_path / "b")
    assert first == again and first[0]["top1"] is not None
    # another setting of the pixels' protocol, or other test images: computed anew
    assert main([*args, "--out", str(tmp_path / "c"), "eval.knn.k=[7]"]) == 0
    assert main([*args, "--out", str(tmp_path / "d"), "eval.test_limit=32"]) == 0
    assert calls.count("pixels") == 3 and len(list(cache.glob("*.json"))) == 3


def test_a_damaged_cache_entry_is_recomputed_not_trusted(tmp_path, cache) -> None:
    args = ["pretrain", "--config", "defaults", *TINY, *QUICK]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    (entry,) = cache.glob("*.json")
    entry.write_text('{"not": "a list"')
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert pixel_records(tmp_path / "b") == pixel_records(tmp_path / "a")
    assert isinstance(json.loads(entry.read_text()), list)  # rewritten whole


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SELFSUP_CACHE", "off")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    args = ["pretrain", "--config", "defaults", *TINY, *QUICK]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert not (tmp_path / "home").exists()


def test_a_fine_tune_sweep_says_its_size_before_it_starts(tmp_path, capsys) -> None:
    """A 256-image run's finetune 10% trained for minutes without saying that eval.min_steps
    had raised 26 labelled images to hundreds of epochs, for each lr of the sweep."""
    out = tmp_path / "run"
    args = [*TINY, "train.epochs=1", "eval.compare_random=false", "eval.compare_pixels=false"]
    args += ["eval.protocols=[finetune]", "eval.finetune.fractions=[0.25]"]
    args += ["eval.finetune.epochs=1", "eval.min_steps=6", "eval.finetune.lrs=[0.05,0.1]"]
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *args]) == 0
    err = capsys.readouterr().err
    assert "raised from 1 by eval.min_steps=6" in err and "for each of 2 lr(s)" in err


def test_a_backbone_is_evaluated_with_the_statistics_it_was_trained_with(tmp_path, monkeypatch):
    """Issue #24.2: evaluation normalised every backbone with the evaluation dataset's own
    statistics; a run's backbone (and its random twin) now sees its training inputs' mean and
    std, raw pixels the dataset's, and each record says which."""
    from selfsup.evaluate import harness

    seen = {}
    real = harness.EvalContext

    def spy(**kw):
        seen.setdefault(kw["work_dir"].name, (kw["mean"], kw["std"]))
        return real(**kw)

    monkeypatch.setattr(harness, "EvalContext", spy)
    out = tmp_path / "run"
    odd = ["data.mean=[0.9,0.8,0.7]", "data.std=[0.5,0.4,0.3]", "eval.compare_random=true"]
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *TINY, *QUICK, *odd]) == 0
    assert seen["synthetic-pretrained"] == ([0.9, 0.8, 0.7], [0.5, 0.4, 0.3])
    assert seen["synthetic-random"] == ([0.9, 0.8, 0.7], [0.5, 0.4, 0.3])
    assert seen["synthetic-pixels"][0] != [0.9, 0.8, 0.7]
    recs = json.loads((out / "results.json").read_text())["evals"]
    by_init = {r["init"]: r["normalisation"] for r in recs}
    assert by_init["pretrained"] == by_init["random"] == "the backbone's own"
    assert by_init["pixels"] == "measured on synthetic train"


def test_a_cpu_fine_tune_trains_in_the_contiguous_layout(tmp_path, monkeypatch) -> None:
    """torch 2.14.1's CPU channels_last backward aborted this fine-tune (a batch of 63, two
    threads: docs/reliability.md): on the CPU a fine-tune's copy of the backbone and its
    batches are contiguous, while the linear probe (no backward through the backbone) keeps
    the run's channels_last."""
    from torch import nn

    from selfsup.evaluate import protocols

    seen: dict[bool, tuple[bool, bool]] = {}
    real_fit = protocols.fit

    def spy(model, images, train, out, **kw):
        result = real_fit(model, images, train, out, **kw)
        conv = next(
            m for m in model.backbone.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1
        )
        seen[model.frozen] = (train.channels_last, conv.weight.is_contiguous())
        return result

    monkeypatch.setattr(protocols, "fit", spy)
    args = [*TINY, "train.epochs=1", "eval.compare_random=false", "eval.compare_pixels=false"]
    args += ["eval.protocols=[linear-aug,finetune]", "eval.finetune.fractions=[0.25]"]
    args += ["eval.finetune.epochs=1", "eval.linear_aug.epochs=1", "eval.linear_aug.lrs=[0.1]"]
    args += ["train.channels_last=true"]
    out = tmp_path / "run"
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *args]) == 0
    assert seen[False] == (False, True)  # fine-tune: contiguous
    assert seen[True] == (True, False)  # linear probe: the run's channels_last
