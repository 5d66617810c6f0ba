"""Query a run's saved index (``selfsup retrieve``): an image of the indexed split, by its id,
or any image file, decoded and resized as the dataset's images are, then embedded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.analysis.encoder import Encoder
from selfsup.analysis.index import check_matches, dataset_slug, open_index, search
from selfsup.analysis.plots import pyplot, save_figure
from selfsup.data.array import ImageArray
from selfsup.data.imagefolder import decode
from selfsup.errors import DataError
from selfsup.features import match_channels
from selfsup.layout import RunDir


@dataclass
class Query:
    """The query image (uint8 (C, H, W), as the split's images), its item in the index when it
    is one of the indexed images, a name for the output, and its label (-1: none known)."""

    image: torch.Tensor
    item: int | None
    name: str
    label: int = -1


@dataclass
class Retrieved:
    query: Query
    hits: list[tuple[int, float]]  # (item, cosine similarity), best first
    meta: dict[str, Any]
    plot: Path


def resolve_query(text: str, meta: dict[str, Any], data: ImageArray) -> Query:
    """An existing image file, else an image id of the split (its index, or for an image
    folder its relative path)."""
    path = Path(text).expanduser()
    if path.is_file():
        try:
            image = torch.from_numpy(np.array(decode(path, data.image_size[0])))
        except Exception as e:  # PIL raises many kinds of errors for a file it cannot use
            raise DataError(f"cannot read the query image {path}: {e}") from e
        return Query(match_channels(image[None], data.channels)[0], None, path.stem)
    items = {str(i): n for n, i in enumerate(meta["ids"])}
    if text in items:
        item = items[text]
        return Query(data.images[item], item, f"item-{item}", int(data.labels[item]))
    what = f"an index 0..{meta['n'] - 1}"
    if data.files:
        what = f"a file id such as {meta['ids'][0]!r}"
    raise DataError(
        f"--query {text!r} is neither an image file nor an image of {meta['dataset']} "
        f"{meta['split']} ({what})"
    )


def class_name(meta: dict[str, Any], label: int) -> str:
    classes = meta["classes"]
    return classes[label] if 0 <= label < len(classes) else "-"


def retrieve(
    enc: Encoder,
    query: str,
    *,
    k: int = 8,
    dissimilar: bool = False,
    dataset: str | None = None,
    split: str = "train",
    out: Path | None = None,
) -> Retrieved:
    """The ``k`` images of the index most (``dissimilar``: least) similar to ``query``, drawn
    into ``out`` (default ``RUN_DIR/plots/retrieve-<dataset>-<split>-<query>.png``)."""
    forest, meta = open_index(enc, dataset, split)
    data = enc.load_split(meta["dataset"], split)
    check_matches(meta, data, enc.run_dir)
    q = resolve_query(query, meta, data)
    if q.item is not None:  # the indexed vector itself
        vector = np.asarray(forest.get_item_vector(q.item), dtype=np.float32)
    else:
        vector = enc.embed(q.image[None], meta["mean"], meta["std"])[0].numpy()
    hits = search(forest, vector, k, dissimilar=dissimilar, exclude=q.item)
    far = "-least" if dissimilar else ""
    name = f"retrieve-{dataset_slug(meta['dataset'])}-{split}-{dataset_slug(q.name)}{far}.png"
    plot = out or RunDir(enc.run_dir).plot(name)
    draw_hits(q, hits, data, meta, plot, dissimilar)
    return Retrieved(q, hits, meta, plot)


def hit_lines(res: Retrieved) -> list[str]:
    """The table ``selfsup retrieve`` prints: rank, id, class, cosine similarity."""
    ids, labels = res.meta["ids"], res.meta["labels"]
    rows = [(str(ids[i]), class_name(res.meta, labels[i]), sim) for i, sim in res.hits]
    w_id = max([len(r[0]) for r in rows] + [2])
    w_class = max([len(r[1]) for r in rows] + [5])
    lines = [f"{'rank':>4}  {'id':<{w_id}}  {'class':<{w_class}}  cosine"]
    for rank, (id_, label, sim) in enumerate(rows, 1):
        lines.append(f"{rank:>4}  {id_:<{w_id}}  {label:<{w_class}}  {sim:+.4f}")
    return lines


def draw_hits(
    q: Query,
    hits: list[tuple[int, float]],
    data: ImageArray,
    meta: dict[str, Any],
    path: Path,
    dissimilar: bool,
) -> Path:
    """One row: the query, then each retrieved image with its rank, id, class and cosine."""
    plt = pyplot()
    cols = 1 + len(hits)
    fig, axes = plt.subplots(1, cols, figsize=(1.3 * cols, 1.9), squeeze=False)

    def show(ax: Any, image: torch.Tensor, title: str) -> None:
        img = image.permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=6)

    show(axes[0, 0], q.image, f"query\n{q.name[-14:]}\n{class_name(meta, q.label)[:14]}")
    for ax, (rank, (item, sim)) in zip(axes[0, 1:], enumerate(hits, 1), strict=True):
        label = class_name(meta, meta["labels"][item])
        show(
            ax,
            data.images[item],
            f"#{rank} {str(meta['ids'][item])[-10:]}\n{label[:14]}\ncos {sim:.3f}",
        )
    which = "least" if dissimilar else "most"
    fig.suptitle(
        f"the {len(hits)} {which} similar images of {meta['dataset'][-40:]} "
        f"{meta['split']} ({meta['backbone']} features)",
        fontsize=7,
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
