"""ImageArray: the one in-memory form of a dataset split.

Every source yields an :class:`ImageArray`: uint8 images (N, C, H, W) and int64 labels. The
training loop moves ``images`` to the training device once, when it fits, and all augmentation
runs there as batched tensor ops (see :mod:`selfsup.data.views`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from selfsup.errors import ConfigError, DataError


@dataclass
class ImageArray:
    """A dataset split as tensors.

    Attributes:
        images: uint8 (N, C, H, W), C is 1 (grayscale) or 3 (RGB). May be a view of a memmap.
        labels: int64 (N,); -1 where an image has no label (e.g. STL-10 ``unlabeled``).
        classes: class names, ``classes[label]``; empty for an unlabeled split.
        name: the dataset name it came from (e.g. ``"cifar10"``), for provenance.
        split: the split name (e.g. ``"train"``).
        files: image folders only: each image's file, relative to the split folder (its id in
            ``selfsup index`` / ``embed``); empty for array datasets, whose ids are positions.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)
    name: str = ""
    split: str = ""
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )
        if self.files and len(self.files) != self.images.shape[0]:
            raise ValueError(
                f"files must name {self.images.shape[0]} images, got {len(self.files)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[3]

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())

    def subset(self, index: torch.Tensor | slice) -> ImageArray:
        """The images, labels (and files) at ``index`` (same classes, name, split)."""
        files = (
            [self.files[i] for i in torch.arange(len(self))[index].tolist()] if self.files else []
        )
        return ImageArray(
            self.images[index],
            self.labels[index],
            list(self.classes),
            self.name,
            self.split,
            files,
        )

    def fingerprints(self) -> np.ndarray:
        """One 64-bit content hash per image (N,) uint64 (BLAKE2b of its pixels): identifies an
        image across subsets, limits and runs, e.g. to check that a pseudo-label teacher never
        saw the labels of the pool it labels."""
        flat = self.images.reshape(len(self), -1).numpy()
        digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in flat)
        return np.frombuffer(digests, dtype=np.uint64).copy()

    def content_id(self) -> str:
        """A short hash of every image and label, in order: two records with the same
        ``test_id`` were scored on the same test images, so they can be paired."""
        h = hashlib.sha256(self.fingerprints().tobytes())
        h.update(self.labels.numpy().astype(np.int64).tobytes())
        return h.hexdigest()[:12]


def seeded_subset(data: ImageArray, limit: int | None, seed: int) -> ImageArray:
    """At most ``limit`` images of ``data``, a seeded random subset in the original order."""
    if limit is None or limit >= len(data):
        return data
    if limit < 1:
        raise ConfigError(f"a limit must be a positive number of images, got {limit}")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit]
    return data.subset(idx.sort().values)


def channel_stats(
    images: torch.Tensor, max_images: int = 10_000
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of uint8 images (N, C, H, W)."""
    step = max(1, len(images) // max_images)
    x = images[::step].float().div_(255)
    return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).clamp_min(1e-3).tolist()


def labelled(data: ImageArray) -> ImageArray:
    """The labelled images of a split, or a DataError when it has none."""
    keep = data.labels >= 0
    if not bool(keep.any()):
        raise DataError(
            f"{data.name} split {data.split!r} has no labels and cannot be used for evaluation"
        )
    return data if bool(keep.all()) else data.subset(keep.nonzero().squeeze(1))
