"""The matrix a redundancy-reduction method acts on, over epochs (``viz.corr_epochs``,
``selfsup viz corr RUN_DIR``).

At each epoch of ``viz.corr_epochs`` the run embeds two augmented views of a fixed sample of
training images (the same images and the same augmentations every time) with its projector
(the backbone when the method has none) and saves, for VICReg, the covariance of the
embeddings (Bardes et al., ICLR 2022, eq. 3: ``C(Z) = (Z - mean)^T (Z - mean) / (N - 1)``,
averaged over the two views) and, for every other method, the Barlow Twins cross-correlation
of the two views (Zbontar et al., ICML 2021, eq. 2: each dimension standardised over the batch,
``C = z_a^T z_b / N``). Training drives the first towards a diagonal of ones, the second
towards the identity. The first :data:`SHOWN` dimensions are kept as a matrix, with the mean
diagonal and the root-mean-square off-diagonal entry of the whole matrix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.analysis.plots import pyplot, save_figure
from selfsup.errors import SelfsupError
from selfsup.layout import RunDir
from selfsup.losses import vicreg_loss
from selfsup.losses.barlow_twins import batch_standardise

SHOWN = 64
PROJECTORS = ("projector", "bt_projector")  # a two-view projector; DINO-Twins' Barlow Twins one


def pair_matrix(
    z_a: torch.Tensor, z_b: torch.Tensor, kind: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(x, y, scale) with the matrix ``x^T y / scale`` (D, D) of ``kind`` for (N, D) batches:
    the two views' mean covariance (their centred rows stacked, over 2 (N - 1)), or their
    cross-correlation."""
    n = z_a.shape[0]
    if kind == "covariance":
        x = torch.cat([z_a - z_a.mean(0), z_b - z_b.mean(0)])
        return x, x, float(2 * (n - 1))
    return batch_standardise(z_a), batch_standardise(z_b), float(n)


def summarise(x: torch.Tensor, y: torch.Tensor, scale: float) -> dict[str, Any]:
    """The first :data:`SHOWN` rows and columns of ``M = x^T y / scale`` and, without forming
    the (D, D) matrix, its mean diagonal and off-diagonal RMS (``|M|_F^2 = sum((x x^T) *
    (y y^T)) / scale^2``: an (N, N) product)."""
    d = x.shape[1]
    diag = (x * y).sum(0) / scale
    frob = ((x @ x.T) * (y @ y.T)).sum() / scale**2
    off = (frob - diag.pow(2).sum()).clamp_min(0) / max(1, d * d - d)
    shown = x[:, :SHOWN].T @ y[:, :SHOWN] / scale
    return {"matrix": shown, "diag_mean": float(diag.mean()), "offdiag_rms": float(off.sqrt())}


def corr_matrix(z_a: torch.Tensor, z_b: torch.Tensor, kind: str) -> dict[str, Any]:
    """:func:`summarise` of the cross-correlation of two views or their mean covariance."""
    return summarise(*pair_matrix(z_a.double(), z_b.double(), kind))


def corr_kind(method: nn.Module) -> str:
    inner = getattr(method, "ssl", method)  # a joint run's SSL method
    return "covariance" if getattr(inner, "loss", None) is vicreg_loss else "cross-correlation"


def embedder(method: nn.Module) -> tuple[str, nn.Module]:
    """(source, module): the method's projector after its backbone, or the backbone alone."""
    inner = getattr(method, "ssl", method)
    for name in PROJECTORS:
        head = getattr(inner, name, None)
        if isinstance(head, nn.Module):
            return "projector", nn.Sequential(inner.backbone, head)
    return "backbone", inner.backbone


def corr_panels(run_dir: str | Path) -> Path:
    """Draw ``RUN_DIR/plots/corr.png``: one panel per saved epoch, -1..1 diverging."""
    run_dir = Path(run_dir)
    files = sorted(RunDir(run_dir).correlation.glob("epoch-*.json"))
    if not files:
        raise SelfsupError(
            f"{run_dir} has no saved correlation matrices; train with viz.corr_epochs=[1,5,10] "
            "(the epochs after which to save them), e.g. selfsup pretrain ... "
            "viz.corr_epochs=[1,5]"
        )
    records = [json.loads(f.read_text()) for f in files]
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(records), figsize=(3.2 * len(records) + 0.8, 3.5), squeeze=False
    )
    image = None
    for ax, rec in zip(axes[0], records, strict=True):
        image = ax.imshow(rec["matrix"], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(
            f"epoch {rec['epoch']}\ndiag {rec['diag_mean']:.2f}, off-diag rms "
            f"{rec['offdiag_rms']:.3f}",
            fontsize=8,
        )
        ax.set_xticks([])
        ax.set_yticks([])
    first = records[0]
    shown = len(first["matrix"])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    what = f"{shown} of {first['dim']} dims, {first['images']} images, two views"
    fig.suptitle(f"{first['kind']} of the {first['source']} embeddings ({what})", fontsize=9)
    return save_figure(fig, RunDir(run_dir).plot("corr.png"), dpi=110)
