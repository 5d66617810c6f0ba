"""Per-epoch train / validation curves (``eval.val_images``): the held-out images come from the
training split and never enter training, the logged values are the model's on them, the SSL
held-out loss leaves the method untouched, and the comparison figure draws one line per run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import selfsup.analysis.plots as plots
import selfsup.evaluate.protocols as protocols
import selfsup.pipeline as pipeline
import selfsup.run.callbacks as callbacks
from selfsup.analysis.curves import epoch_series, read_metrics
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.data.sampling import stratified_holdout
from selfsup.data.sources import load_dataset
from selfsup.data.views import make_views
from selfsup.errors import CheckpointError, ConfigError, SelfsupError
from selfsup.features import run_logits
from selfsup.rundir import make_method
from selfsup.train.heldout import heldout_ssl_loss
from selfsup.train.loop import check_compatible
from tiny import TINY

FAST = ["eval.protocols=[knn]", "eval.compare_random=false", "eval.compare_pixels=false"]
CLASSIFIER_KEYS = {"train_loss", "train_top1", "val_loss", "val_top1"}
RESOLVED = ["views.size=16", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]


def epoch_records(run_dir) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "loss" not in r and "epoch" in r]


def spy(monkeypatch, module, name: str) -> list:
    """Wrap ``module.name`` so that each call's (args, kwargs, result) is recorded."""
    calls, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_stratified_holdout_is_proportional_disjoint_and_seeded() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    kept, held = stratified_holdout(labels, 20, seed=3)
    assert len(held) == 20 and len(kept) == 80
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(100))  # a partition
    assert torch.bincount(labels[held]).tolist() == [12, 6, 2]  # 20 % of every class
    assert torch.equal(held, stratified_holdout(labels, 20, seed=3)[1])
    assert not torch.equal(held, stratified_holdout(labels, 20, seed=4)[1])
    with pytest.raises(ConfigError, match=r"eval\.val_images"):
        stratified_holdout(labels, 100, seed=0)


def test_supervised_run_logs_train_and_val_curves_on_held_out_training_images(
    tmp_path, monkeypatch
) -> None:
    tiny = [o for o in TINY if not o.startswith("method.")]
    cfg = load_config(None, [*tiny, *FAST, "eval.val_images=32"], method={"name": "supervised"})
    trained = spy(monkeypatch, pipeline, "train_run")
    monitors = spy(monkeypatch, callbacks, "heldout_curves")
    pipeline.pretrain(cfg, tmp_path / "run")

    (train_args, _, method), ((_, _, train, _, val, _), _, _) = trained[0], monitors[0]
    assert len(val) == 32 and len(train_args[1]) == 128 - 32  # the carve left training
    split = load_dataset("synthetic", "train", image_size=16).fingerprints()
    test = load_dataset("synthetic", "test", image_size=16).fingerprints()
    seen = np.load(tmp_path / "run" / "labelled_images.npy")  # the images it trained on
    held = val.fingerprints()
    assert np.isin(held, split).all() and not np.isin(held, test).any()
    assert not np.isin(held, seen).any() and not np.isin(held, train.fingerprints()).any()
    counts = torch.bincount(val.labels, minlength=10)  # class-stratified: 32 of 128
    share = torch.bincount(torch.cat([val.labels, train.labels]), minlength=10) * 32 / 128
    assert ((counts - share).abs() <= 1).all()

    recs = epoch_records(tmp_path / "run")
    assert [r["epoch"] for r in recs] == [1, 2]
    assert all(set(r) >= CLASSIFIER_KEYS and "val_ssl_loss" not in r for r in recs)
    for r in recs:
        assert 0 <= r["train_top1"] <= 1 and 0 <= r["val_top1"] <= 1
    # the last record is the trained model's cross-entropy and accuracy on the held-out images
    logits = run_logits(method, cfg, val.images, batch_size=64, device=torch.device("cpu"))
    want = float(F.cross_entropy(logits, val.labels))
    assert math.isclose(recs[-1]["val_loss"], want, rel_tol=1e-4)
    top1 = float((logits.argmax(1) == val.labels).float().mean())
    assert math.isclose(recs[-1]["val_top1"], top1, abs_tol=1e-6)
    assert (tmp_path / "run" / "plots" / "train_val.png").is_file()


def test_ssl_run_logs_val_ssl_loss_and_its_fine_tuning_logs_train_and_val(
    tmp_path, monkeypatch
) -> None:
    finetune = [
        "eval.protocols=[finetune]",
        "eval.finetune.fractions=[0.5]",
        "eval.finetune.epochs=2",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
    ]
    cfg = load_config(None, [*TINY, *finetune, "eval.val_images=32"])
    samples = spy(monkeypatch, protocols, "curve_samples")
    pipeline.pretrain(cfg, tmp_path / "run")
    recs = epoch_records(tmp_path / "run")
    assert [r["epoch"] for r in recs] == [1, 2]
    assert all(math.isfinite(r["val_ssl_loss"]) and not CLASSIFIER_KEYS & set(r) for r in recs)
    assert (tmp_path / "run" / "plots" / "curves.png").is_file()

    (fit_data, held, _, _), _, (train_s, val_s) = samples[0]
    assert not np.isin(held.fingerprints(), fit_data.fingerprints()).any()
    assert not np.isin(val_s.fingerprints(), train_s.fingerprints()).any()
    (ft_dir,) = (tmp_path / "run" / "evals").rglob("finetune-0.5-*")
    ft = epoch_records(ft_dir)
    assert len(ft) >= 2 and all(set(r) >= CLASSIFIER_KEYS for r in ft)
    assert [r["epoch"] for r in ft] == list(range(1, len(ft) + 1))
    assert (ft_dir / "plots" / "train_val.png").is_file()


def test_without_val_images_nothing_is_held_out_or_logged(tmp_path, monkeypatch) -> None:
    cfg = load_config(None, [*TINY, *FAST, "train.epochs=1"])
    trained = spy(monkeypatch, pipeline, "train_run")
    pipeline.pretrain(cfg, tmp_path / "run")
    assert len(trained[0][0][1]) == 128  # every image trains
    keys = {k for r in read_metrics(tmp_path / "run") for k in r}
    assert not keys & {*CLASSIFIER_KEYS, "val_ssl_loss"}
    assert not (tmp_path / "run" / "plots" / "train_val.png").exists()


def ssl_method(name: str):
    tiny = [o for o in TINY if not o.startswith("method.")]
    extra = {
        "vicreg": ["method.projector=32-32"],
        "isd": ["method.queue_size=64"],
        "dino": [
            "method.local_crops=0",
            "method.out_dim=64",
            "method.hidden_dim=32",
            "method.bottleneck_dim=16",
        ],
    }[name]
    return make_method(load_config(None, [*tiny, *RESOLVED, f"method.name={name}", *extra]), 3)


@pytest.mark.parametrize("name", ["vicreg", "isd", "dino"])
def test_heldout_ssl_loss_leaves_teacher_queue_centre_and_batch_norm_alone(name) -> None:
    torch.manual_seed(0)
    method = ssl_method(name).eval()  # as the loop hands it over
    images = (torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).byte()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    rng = torch.get_rng_state()
    kw = dict(batch_size=8, seed=5, device=torch.device("cpu"))
    loss = heldout_ssl_loss(method, images, **kw)

    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights, EMA, queue, centre, BN
    assert torch.equal(rng, torch.get_rng_state()) and not method.training
    assert not getattr(method, "_keys", []) and getattr(method, "_teacher_out", None) is None
    assert loss == heldout_ssl_loss(method, images, **kw)  # the same views every time
    # the mean of the method's train-mode loss over the two full batches (the last 4 dropped)
    net = ssl_method(name)
    net.load_state_dict(before)
    gen, want = torch.Generator().manual_seed(5), []
    with torch.no_grad():
        for start in (0, 8):
            views = make_views(images[start : start + 8], method.view_specs, gen)
            want.append(float(net.train()(views).loss))
    assert math.isclose(loss, sum(want) / 2, rel_tol=1e-5)


def write_run(path, rows: list[dict]) -> None:
    path.mkdir(parents=True)
    steps = [{"step": 0, "epoch": 0, "loss": 1.0, "lr": 0.1}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps + rows))


def test_compare_curves_draws_one_line_per_run_that_logged_the_key(tmp_path, monkeypatch) -> None:
    for name, scale, epochs in (("setup1", 0.1, (1, 2, 3)), ("setup2", 0.2, (1, 2))):
        rows = [{"epoch": e, "val_top1": scale * e, "val_loss": 1 / (scale * e)} for e in epochs]
        write_run(tmp_path / name, rows)
    write_run(tmp_path / "ssl", [{"epoch": 1, "val_ssl_loss": 3.0}])
    figures = spy(monkeypatch, plots, "save_figure")
    runs = [tmp_path / "setup1", tmp_path / "setup2", tmp_path / "ssl"]
    out = plots.compare_curves(runs, ["val_top1", "val_ssl_loss"], tmp_path / "cmp.png")
    fig = figures[0][0][0]
    top1, ssl = fig.axes[:2]
    assert [line.get_label() for line in top1.lines] == ["setup1", "setup2"]
    assert list(top1.lines[0].get_xdata()) == [1, 2, 3]
    assert list(top1.lines[1].get_ydata()) == pytest.approx([0.2, 0.4])
    assert [line.get_label() for line in ssl.lines] == ["ssl"]
    assert Image.open(out).size[0] > 100
    with pytest.raises(SelfsupError, match="val_loss, val_top1"):
        plots.compare_curves(runs[:2], ["val_ssl_loss"], tmp_path / "x.png")
    assert epoch_series(read_metrics(runs[0]), "loss") == ([], [])  # step records are not curves

    png = tmp_path / "cli.png"
    args = ["viz", "curves", *map(str, runs[:2]), "--keys", "val_loss", "--out", str(png)]
    assert main(args) == 0 and png.is_file()
    assert main(["viz", "curves", str(runs[2])]) == 0
    assert (runs[2] / "plots" / "compare_curves.png").is_file()


def test_resume_with_another_val_images_is_refused(tmp_path) -> None:
    saved = {"config": {"method": {"name": "vicreg"}, "eval": {"val_images": 32}}}
    check_compatible(saved, {"method": {"name": "vicreg"}, "eval": {"val_images": 32}}, tmp_path)
    with pytest.raises(CheckpointError, match=r"eval\.val_images=32"):
        check_compatible(saved, {"method": {"name": "vicreg"}, "eval": {"val_images": 0}}, tmp_path)


def test_a_diverging_classifier_is_flagged_on_the_console(tmp_path, monkeypatch, capsys) -> None:
    """Issue #25.8: a joint run logged val_loss 5.7e8 and nothing said so."""
    from selfsup.train import heldout

    assert heldout.loss_warning(2.0, 10) is None  # ln 10 = 2.3: a plain loss
    assert "5.7e+08" in heldout.loss_warning(5.7e8, 10)
    assert heldout.loss_warning(float("nan"), 10) is not None
    real = heldout.classification_curves

    def exploded(*args):
        return {**real(*args), "val_loss": 5.7e8}

    monkeypatch.setattr(heldout, "classification_curves", exploded)
    tiny = [o for o in TINY if not o.startswith("method.")]
    cfg = load_config(None, [*tiny, *FAST, "eval.val_images=32"], method={"name": "supervised"})
    pipeline.pretrain(cfg, tmp_path / "run")
    said = capsys.readouterr()
    assert "held-out loss is 5.7e+08" in said.out + said.err and "train.lr" in said.out + said.err
