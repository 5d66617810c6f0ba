"""A saved ANNOY index of a run's features of one split: ``selfsup index`` / ``retrieve``.

``RUN_DIR/index/<dataset>-<split>.ann`` is an ANNOY forest (Spotify's ANNOY, angular distance
``sqrt(2 - 2 cos)``, so cosine similarity = ``1 - d^2 / 2``) of the evaluation backbone's
features (:mod:`selfsup.analysis.encoder`); the ``.json`` beside it holds the image ids, labels
and class names, the feature dimension, the normalisation used, the hash of the checkpoint the
features came from and a 64-bit hash of every image's pixels (:meth:`ImageArray.fingerprints`).
A search refuses an index whose checkpoint is not the run's current one, or whose split has
changed since (an image added, removed, or replaced by another of the same name): the features
would be stale. The least similar images of a query are the nearest neighbours of its negation
(cos(-q, x) = -cos(q, x)).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.analysis.encoder import Encoder, image_ids
from selfsup.analysis.retrieval import annoy_available, annoy_index
from selfsup.atomic import atomic_path, write_json_atomic
from selfsup.data.array import ImageArray
from selfsup.errors import DataError, SelfsupError
from selfsup.layout import RunDir

FORMAT = "selfsup-index-v2"  # v2: per-image fingerprints
N_TREES = 50
SEARCH_K_FACTOR = 16


def dataset_slug(dataset: str) -> str:
    """A file-name-safe form of a dataset name (a short hash added when characters changed)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("_")[:60]
    if slug == dataset:
        return slug
    return f"{slug}-{hashlib.sha256(dataset.encode()).hexdigest()[:8]}"


def index_paths(run_dir: Path, dataset: str, split: str) -> tuple[Path, Path]:
    """(forest .ann, metadata .json) of the index of ``dataset``'s ``split``."""
    stem = RunDir(run_dir).index / f"{dataset_slug(dataset)}-{split}"
    return stem.with_suffix(".ann"), stem.with_suffix(".json")


def index_command(run_dir: Path, dataset: str, split: str) -> str:
    return f"selfsup index {run_dir} --dataset {dataset} --split {split}"


@dataclass
class Embedded:
    """A split's features (N, D), its images, ids and the metadata that describes them."""

    features: torch.Tensor
    data: ImageArray
    meta: dict[str, Any]


def embed_split(enc: Encoder, dataset: str | None, split: str) -> Embedded:
    """The evaluation backbone's features of every image of ``split``."""
    data = enc.load_split(dataset, split)
    mean, std = enc.normalisation(data)
    features = enc.embed(data.images, mean, std)
    meta = {
        "dataset": data.name,
        "split": split,
        "n": len(data),
        "dim": int(features.shape[1]),
        "backbone": enc.which,
        "backbone_name": enc.cfg.backbone.name,
        "checkpoint": enc.checkpoint,
        "mean": mean,
        "std": std,
        "view_size": enc.cfg.views.size,
        "image_size": list(data.image_size),
        "classes": list(data.classes),
        "ids": image_ids(data),
        "labels": data.labels.tolist(),
        "fingerprints": fingerprints(data),
    }
    return Embedded(features, data, meta)


def require_annoy() -> None:
    if not annoy_available():
        raise SelfsupError("selfsup index / retrieve need ANNOY: pip install 'selfsup[viz]'")


def build_index(enc: Encoder, dataset: str | None, split: str) -> tuple[Path, dict[str, Any]]:
    """Embed ``split``, build the ANNOY forest and save it with its metadata in the run."""
    require_annoy()
    emb = embed_split(enc, dataset, split)
    ann, meta_path = index_paths(enc.run_dir, emb.meta["dataset"], split)
    forest = annoy_index(emb.features, n_trees=N_TREES)
    ann.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(ann) as tmp:
        forest.save(str(tmp))
    forest.unload()
    meta = {"format": FORMAT, "metric": "angular", "n_trees": N_TREES, **emb.meta}
    write_json_atomic(meta_path, meta)
    return ann, meta


def open_index(enc: Encoder, dataset: str | None, split: str) -> tuple[Any, dict[str, Any]]:
    """The saved forest and its metadata; a clear error when it is missing or stale."""
    require_annoy()
    from annoy import AnnoyIndex  # optional dependency, checked above

    dataset = dataset or enc.cfg.data.dataset
    ann, meta_path = index_paths(enc.run_dir, dataset, split)
    again = index_command(enc.run_dir, dataset, split)
    if not ann.is_file() or not meta_path.is_file():
        raise SelfsupError(f"{enc.run_dir} has no index of {dataset} {split}; build it: {again}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise SelfsupError(f"cannot read {meta_path} ({err}); rebuild it: {again}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SelfsupError(
            f"{meta_path} is not a {FORMAT} index (an earlier selfsup's index does not record "
            f"which images it was built from); rebuild it: {again}"
        )
    if meta["checkpoint"] != enc.checkpoint:
        raise SelfsupError(
            f"the index {ann} is stale: it holds the features of checkpoint {meta['checkpoint']}, "
            f"but the run's checkpoint is now {enc.checkpoint}; rerun: {again}"
        )
    forest = AnnoyIndex(meta["dim"], "angular")
    forest.load(str(ann))
    return forest, meta


def search(
    forest: Any, vector: np.ndarray, k: int, *, dissimilar: bool = False, exclude: int | None = None
) -> list[tuple[int, float]]:
    """(item, cosine similarity) of the ``k`` items most (or least) similar to ``vector``,
    best first; ``exclude`` (the query's own item) is left out.

    ANNOY inspects ``search_k`` = :data:`SEARCH_K_FACTOR` x n_trees x k nodes, 16 times its
    default: one query stays in milliseconds, and on the tiny test run's 4096 images recall@8
    against exact search rose from 99.8% / 96.7% (most / least similar, 200 queries) to 100%."""
    sign = -1.0 if dissimilar else 1.0
    n = min(k + (exclude is not None), forest.get_n_items())
    search_k = SEARCH_K_FACTOR * forest.get_n_trees() * n
    items, dists = forest.get_nns_by_vector(sign * vector, n, search_k, include_distances=True)
    found = [(i, sign * (1.0 - d * d / 2.0)) for i, d in zip(items, dists, strict=True)]
    return [(i, s) for i, s in found if i != exclude][:k]


def fingerprints(data: ImageArray) -> list[str]:
    """Each image's pixel hash as 16 hex digits: what the index was built from."""
    return [f"{int(h):016x}" for h in data.fingerprints()]


def check_matches(meta: dict[str, Any], data: ImageArray, run_dir: Path) -> None:
    """The split loaded now must be the one indexed: the same ids, in order, and the same
    pixels (an image replaced by another under its name has a new fingerprint)."""
    again = index_command(run_dir, meta["dataset"], meta["split"])
    if image_ids(data) != meta["ids"]:
        raise DataError(
            f"{meta['dataset']} {meta['split']} has changed since it was indexed ({len(data)} "
            f"images now, {meta['n']} indexed); rerun: {again}"
        )
    now = fingerprints(data)
    changed = [
        str(i) for i, a, b in zip(meta["ids"], meta["fingerprints"], now, strict=True) if a != b
    ]
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise DataError(
            f"{meta['dataset']} {meta['split']} has changed since it was indexed: "
            f"{', '.join(changed[:3])}{more} ({len(changed)} of {len(now)} images) are not the "
            f"images whose features the index holds; rerun: {again}"
        )
