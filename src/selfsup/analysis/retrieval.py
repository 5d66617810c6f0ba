"""Nearest-neighbour image retrieval: the most and least similar training images of a query.

Features are compared by cosine similarity. Search is exact (one matrix product) or, when the
``annoy`` package is installed, approximate with an ANNOY forest on the angular distance
(Spotify's ANNOY: random-projection trees, ``n_trees`` of them); the least similar images of a
query are the nearest neighbours of its negation. :func:`recall_at_k` says how many of the
exact neighbours ANNOY found, :func:`precision_at_k` the share of neighbours with the query's
class. :func:`retrieval_study` puts the pretrained backbone, its random-init twin and the raw
pixels side by side, draws the grid and saves the numbers beside it (``plots/retrieval.json``,
for the report; ``selfsup viz retrieval RUN_DIR``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.analysis.plots import pyplot, save_figure
from selfsup.atomic import write_json_atomic
from selfsup.backbones import build_backbone
from selfsup.backbones.pixels import Pixels
from selfsup.data.array import ImageArray, channel_stats, seeded_subset
from selfsup.evaluate.harness import load_eval_splits
from selfsup.features import extract_features, input_channels, match_channels
from selfsup.layout import RunDir


def annoy_available() -> bool:
    return importlib.util.find_spec("annoy") is not None


def exact_neighbours(
    bank: torch.Tensor, query: torch.Tensor, k: int, *, dissimilar: bool = False
) -> torch.Tensor:
    """Indices (Q, k) into ``bank`` (N, D) of each query's ``k`` most similar rows by cosine
    (or least similar with ``dissimilar``), best first."""
    sims = F.normalize(query.float(), dim=1) @ F.normalize(bank.float(), dim=1).T
    return (-sims if dissimilar else sims).topk(min(k, len(bank)), dim=1).indices


def annoy_index(bank: torch.Tensor, *, n_trees: int = 50, seed: int = 0) -> Any:
    """An ANNOY forest over the rows of ``bank`` (angular distance = cosine on normalised
    vectors), built once and searched with :func:`annoy_neighbours`."""
    from annoy import AnnoyIndex  # optional dependency: `pip install annoy`

    index = AnnoyIndex(bank.shape[1], "angular")
    index.set_seed(seed)
    for i, row in enumerate(bank.float().numpy()):
        index.add_item(i, row)
    index.build(n_trees)
    return index


def annoy_neighbours(
    index: Any, query: torch.Tensor, k: int, *, dissimilar: bool = False
) -> torch.Tensor:
    """:func:`exact_neighbours` by the ANNOY forest ``index``; the least similar rows of
    ``q`` are the nearest of ``-q``."""
    sign = -1.0 if dissimilar else 1.0
    k = min(k, index.get_n_items())
    rows = [index.get_nns_by_vector(sign * q, k) for q in query.float().numpy()]
    return torch.tensor(rows, dtype=torch.long)


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Share of the exact ``k`` neighbours of each query that ``found`` also lists, averaged."""
    hits = [
        len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, exact, strict=True)
    ]
    return float(np.mean(hits)) if hits else 0.0


def precision_at_k(idx: torch.Tensor, bank_labels: torch.Tensor, query_labels: torch.Tensor):
    """Share of the retrieved images (Q, k) whose class is the query's, averaged."""
    return float((bank_labels[idx] == query_labels.view(-1, 1)).float().mean())


@dataclass
class RetrievalResult:
    precision: dict[str, float]  # features name -> precision@k of the most similar
    recall: float | None  # ANNOY against exact (pretrained features); None without ANNOY
    k: int
    grid: Path
    queries: list[int] = field(default_factory=list)


def retrieval_study(
    run_dir: Path,
    cfg: Any,
    method: nn.Module,
    *,
    k: int = 8,
    n_queries: int = 6,
    bank_limit: int = 10_000,
    query_limit: int = 1_000,
    seed: int = 0,
) -> RetrievalResult:
    """Retrieve from ``bank_limit`` training images for ``query_limit`` test images with the
    run's backbone, its random-init twin and the raw pixels; precision@k of each, ANNOY's
    recall@k against exact search, and ``RUN_DIR/plots/retrieval.png``: ``n_queries`` rows of
    query | the k most similar | the k least similar images (pretrained features), with these
    numbers in ``plots/retrieval.json``. ``cfg`` and ``method``: the run's config and trained
    method (:func:`selfsup.rundir.load_run`)."""
    d = cfg.data
    train, test = load_eval_splits(
        d.dataset, cfg.eval, root=d.root, download=False, image_size=d.image_size
    )
    bank = seeded_subset(train, bank_limit, seed)
    queries = seeded_subset(test, query_limit, seed + 1)
    channels = input_channels(method.backbone)
    mean, std = channel_stats(match_channels(bank.images, channels))
    torch.manual_seed(cfg.seed)
    random = build_backbone(cfg.backbone, in_channels=channels, image_size=cfg.views.size)
    nets = {
        "pretrained": method.backbone,
        "random init": random,
        "raw pixels": Pixels(channels, cfg.views.size),
    }
    kw = dict(size=cfg.views.size, mean=mean, std=std, precision=cfg.train.precision)
    precision, features, exact = {}, {}, {}
    for name, net in nets.items():
        fb = extract_features(net, match_channels(bank.images, channels), **kw)
        fq = extract_features(net, match_channels(queries.images, channels), **kw)
        features[name], exact[name] = (fb, fq), exact_neighbours(fb, fq, k)
        precision[name] = precision_at_k(exact[name], bank.labels, queries.labels)
    shown = torch.randperm(len(queries), generator=torch.Generator().manual_seed(seed))
    shown = shown[:n_queries]
    near, far, recall = _grid_neighbours(*features["pretrained"], exact["pretrained"], shown, k)
    grid = RunDir(run_dir).plot("retrieval.png")
    draw_grid(queries.subset(shown), bank, near, far, grid, title=_title(precision, k))
    search = "exact" if recall is None else "annoy"
    numbers = {
        "k": k,
        "precision": precision,
        "recall": recall,
        "bank": len(bank),
        "queries": len(queries),
        "search": search,
    }
    write_json_atomic(grid.with_suffix(".json"), numbers)  # the figures of the run's report
    return RetrievalResult(precision, recall, k, grid, shown.tolist())


def _grid_neighbours(
    fb: torch.Tensor, fq: torch.Tensor, exact: torch.Tensor, shown: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """(nearest, farthest, ANNOY's recall@k or None) for the ``shown`` queries: from one ANNOY
    forest when installed (and how much of exact search it finds), else exact search."""
    if not annoy_available():
        return exact[shown], exact_neighbours(fb, fq[shown], k, dissimilar=True), None
    index = annoy_index(fb)
    recall = recall_at_k(annoy_neighbours(index, fq, k), exact)
    near = annoy_neighbours(index, fq[shown], k)
    return near, annoy_neighbours(index, fq[shown], k, dissimilar=True), recall


def _title(precision: dict[str, float], k: int) -> str:
    parts = ", ".join(f"{name} {100 * p:.1f}%" for name, p in precision.items())
    return f"precision@{k} (share of neighbours of the query's class): {parts}"


def draw_grid(
    queries: ImageArray,
    bank: ImageArray,
    near: torch.Tensor,
    far: torch.Tensor,
    path: Path,
    *,
    title: str = "",
) -> None:
    """One row per query: the query, its most similar and its least similar bank images, each
    labelled with its class name (green where it matches the query's class)."""
    plt = pyplot()
    rows, k = len(queries), near.shape[1]
    cols = 1 + 2 * k
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.25 * rows + 0.6), squeeze=False)
    names = list(bank.classes)

    def show(ax: Any, image: torch.Tensor, label: int, colour: str = "black") -> None:
        img = image.permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        text = names[label] if 0 <= label < len(names) else "?"
        ax.set_title(text[:12], fontsize=6, color=colour)

    for r in range(rows):
        q_label = int(queries.labels[r])
        show(axes[r, 0], queries.images[r], q_label)
        axes[r, 0].set_ylabel("query", fontsize=7)
        for j, idx in enumerate([*near[r].tolist(), *far[r].tolist()]):
            label = int(bank.labels[idx])
            show(axes[r, 1 + j], bank.images[idx], label, "green" if label == q_label else "red")
    if rows:
        axes[0, 1].annotate("most similar ->", (0, 1.35), xycoords="axes fraction", fontsize=7)
        axes[0, 1 + k].annotate("least similar ->", (0, 1.35), xycoords="axes fraction", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
