"""viz.corr_epochs and `selfsup viz corr`: the cross-correlation (Barlow Twins) / covariance
(VICReg) of two views' embeddings, against loop-based references, saved during training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from selfsup.analysis.correlation import SHOWN, corr_kind, corr_matrix, embedder
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.data.views import eval_view
from selfsup.errors import ConfigError
from selfsup.losses import barlow_twins_loss, vicreg_loss
from selfsup.methods.base import Method
from selfsup.methods.siamese import Siamese
from selfsup.pipeline import load_pretrain_data
from selfsup.run.callbacks import correlation_saver
from selfsup.rundir import load_run
from tiny import TINY


def pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=g) * torch.linspace(0.5, 3, d) + torch.arange(d)
    return z_a, 0.6 * z_a + torch.randn(n, d, generator=g)


def summary(m: np.ndarray) -> tuple[float, float]:
    off = m[~np.eye(len(m), dtype=bool)]
    return float(np.diag(m).mean()), float(np.sqrt((off**2).mean()))


def test_cross_correlation_against_a_loop_reference() -> None:
    """Barlow Twins eq. 2: C_ij = sum_b za_bi zb_bj / N of per-dimension standardised
    embeddings (biased variance + 1e-5, as BatchNorm1d(affine=False))."""
    z_a, z_b = pair(40, 6)
    a, b = z_a.double().numpy(), z_b.double().numpy()
    n, d = a.shape
    ref = np.zeros((d, d))
    for i in range(d):
        ai = (a[:, i] - a[:, i].mean()) / np.sqrt(a[:, i].var() + 1e-5)
        for j in range(d):
            bj = (b[:, j] - b[:, j].mean()) / np.sqrt(b[:, j].var() + 1e-5)
            ref[i, j] = sum(ai[k] * bj[k] for k in range(n)) / n
    out = corr_matrix(z_a, z_b, "cross-correlation")
    assert np.allclose(out["matrix"].numpy(), ref, atol=1e-9)
    assert (out["diag_mean"], out["offdiag_rms"]) == pytest.approx(summary(ref))
    assert 0.4 < out["diag_mean"] < 1  # correlated views, not the identity


def test_covariance_is_the_two_views_mean_covariance() -> None:
    """VICReg eq. 3: Cov(Z) = (Z - mean)^T (Z - mean) / (N - 1), per view, averaged."""
    z_a, z_b = pair(30, 5, seed=1)
    ref = (np.cov(z_a.double().numpy().T) + np.cov(z_b.double().numpy().T)) / 2
    out = corr_matrix(z_a, z_b, "covariance")
    assert np.allclose(out["matrix"].numpy(), ref, atol=1e-9)
    assert (out["diag_mean"], out["offdiag_rms"]) == pytest.approx(summary(ref))


def test_the_matrix_is_truncated_but_its_summary_covers_every_dimension() -> None:
    """Only the first SHOWN dims are kept, but the diagonal mean and off-diagonal RMS (found
    without forming the D x D matrix) are those of the whole matrix."""
    z_a, z_b = pair(50, SHOWN + 16, seed=2)
    out = corr_matrix(z_a, z_b, "cross-correlation")
    assert out["matrix"].shape == (SHOWN, SHOWN)
    a, b = z_a.double().numpy(), z_b.double().numpy()
    a, b = ((x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) for x in (a, b))
    full = a.T @ b / len(a)
    assert np.allclose(out["matrix"].numpy(), full[:SHOWN, :SHOWN])
    assert (out["diag_mean"], out["offdiag_rms"]) == pytest.approx(summary(full))
    assert out["offdiag_rms"] != pytest.approx(summary(full[:SHOWN, :SHOWN])[1], rel=1e-6)


def test_kind_and_source_follow_the_method() -> None:
    specs = [eval_view(16, [0.5] * 3, [0.25] * 3)] * 2
    backbone, projector = nn.Linear(4, 4), nn.Linear(4, 8)
    vicreg = Siamese(backbone, specs, projector, vicreg_loss)
    barlow = Siamese(backbone, specs, projector, barlow_twins_loss)
    assert corr_kind(vicreg) == "covariance" and corr_kind(barlow) == "cross-correlation"
    source, net = embedder(barlow)
    assert source == "projector" and net(torch.ones(2, 4)).shape == (2, 8)
    assert embedder(Method(backbone, specs)) == ("backbone", backbone)  # no projector


def test_config_refuses_epoch_zero() -> None:
    with pytest.raises(ConfigError, match=r"viz\.corr_epochs"):
        load_config(None, ["viz.corr_epochs=[0]"])


def test_corr_epochs_saved_during_training_and_drawn(tmp_path: Path, capsys) -> None:
    """A Barlow Twins run saves its projector's cross-correlation at the chosen epochs, of the
    same images and views each time (recomputed from the final weights, epoch 2 is reproduced);
    `selfsup viz corr` draws one panel per epoch; without any, a clear error."""
    run = tmp_path / "run"
    quick = [
        *TINY,
        "method.name=barlow_twins",
        "method.projector=32-32",
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
        "eval.monitor_every=0",
        "viz.corr_epochs=[1,2]",
        "viz.corr_limit=64",
    ]
    assert main(["pretrain", "--config", "defaults", "--out", str(run), *quick]) == 0
    files = sorted((run / "correlation").glob("epoch-*.json"))
    assert [f.name for f in files] == ["epoch-0001.json", "epoch-0002.json"]
    first, last = (json.loads(f.read_text()) for f in files)
    assert last["kind"] == "cross-correlation" and last["source"] == "projector"
    assert last["dim"] == 32 and last["images"] == 64 and np.shape(last["matrix"]) == (32, 32)
    assert not np.allclose(first["matrix"], last["matrix"])
    cfg, method = load_run(run)
    again = tmp_path / "again"
    correlation_saver(cfg, load_pretrain_data(cfg), method, torch.device("cpu"), again)(None, 2)
    redo = json.loads((again / "correlation" / "epoch-0002.json").read_text())
    assert np.allclose(redo["matrix"], last["matrix"], atol=1e-5)
    capsys.readouterr()
    assert main(["viz", "corr", str(run)]) == 0
    png = run / "plots" / "corr.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 10_000
    assert main(["viz", "corr", str(tmp_path / "elsewhere")]) == 2
    assert "viz.corr_epochs" in capsys.readouterr().err
