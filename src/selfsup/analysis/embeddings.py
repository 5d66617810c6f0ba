"""Embeddings over epochs: one t-SNE panel per saved epoch (``selfsup viz tsne RUN_DIR``).

The run saves the backbone features of a fixed, class-balanced sample of labelled training
images after each epoch of ``viz.embed_epochs`` (``pipeline.embedding_saver``); each panel maps
the same images, coloured by class, so a reader sees the classes separate as training goes on.
scikit-learn's t-SNE (``pip install 'selfsup[viz]'``), PCA-initialised and seeded.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from selfsup.analysis.plots import pyplot, save_figure
from selfsup.errors import SelfsupError
from selfsup.layout import RunDir


def saved_epochs(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, file) of every saved embedding of the run, in epoch order."""
    files = sorted(RunDir(run_dir).embeddings.glob("epoch-*.npy"))
    return [(int(f.stem.split("-")[1]), f) for f in files]


def tsne_panels(run_dir: Path, *, perplexity: float = 30.0, seed: int = 0) -> Path:
    """Draw ``RUN_DIR/plots/tsne.png``: one t-SNE panel per saved epoch; returns its path."""
    if importlib.util.find_spec("sklearn") is None:
        raise SelfsupError("selfsup viz tsne needs scikit-learn: pip install 'selfsup[viz]'")
    from sklearn.manifold import TSNE  # optional dependency, checked above

    run_dir = Path(run_dir)
    epochs = saved_epochs(run_dir)
    if not epochs:
        raise SelfsupError(
            f"{run_dir} has no saved embeddings; train with viz.embed_epochs=[1,5,10] (the "
            "epochs after which to save them), e.g. selfsup pretrain ... viz.embed_epochs=[1,5]"
        )
    labels = np.load(RunDir(run_dir).embedding_labels)
    classes = json.loads(RunDir(run_dir).embedding_classes.read_text())
    plt = pyplot()
    fig, axes = plt.subplots(1, len(epochs), figsize=(3.4 * len(epochs), 3.6), squeeze=False)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, (epoch, path) in zip(axes[0], epochs, strict=True):
        feats = np.load(path)
        tsne = TSNE(
            n_components=2,
            init="pca",
            random_state=seed,
            perplexity=min(perplexity, max(2.0, (len(feats) - 1) / 3)),
        )
        xy = tsne.fit_transform(feats.astype(np.float32))
        for c, name in enumerate(classes):
            keep = labels == c
            if keep.any():
                ax.scatter(*xy[keep].T, s=3, color=colours(c % colours.N), label=name)
        ax.set_title(f"epoch {epoch}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7, markerscale=3, frameon=False)
    fig.suptitle(f"t-SNE of the backbone features of {len(labels)} training images", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    return save_figure(fig, RunDir(run_dir).plot("tsne.png"), dpi=110)
