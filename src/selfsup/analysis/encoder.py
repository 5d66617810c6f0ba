"""A finished run's evaluation backbone as an image encoder, for index / retrieve / embed /
attention maps (:func:`selfsup.rundir.load_encoder` reads it from a run directory).

The backbone is the one the run's evaluation uses (``eval.backbone``, auto: DINO's EMA
teacher, every other method's student: :func:`selfsup.rundir.eval_backbone`). Images are
embedded by :func:`selfsup.features.extract_features` (resize to the run's view size,
normalise, eval mode). The normalisation is the run's own on its pretraining dataset and, as
for a transfer evaluation, the one measured on the split (after channel matching) elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.data.array import ImageArray, channel_stats
from selfsup.data.sources import load_dataset
from selfsup.features import extract_features, input_channels, match_channels
from selfsup.layout import RunDir
from selfsup.precision import resolve_device


def checkpoint_hash(run_dir: Path) -> str:
    """A short SHA-256 of the run's ``checkpoints/last.pt``: what an index was built from."""
    h = hashlib.sha256()
    with RunDir(run_dir).checkpoint.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass
class Encoder:
    """The run's config, its evaluation backbone (``which``: student / teacher) and the hash of
    the checkpoint it was loaded from."""

    run_dir: Path
    cfg: Any  # the run's root config (selfsup.config.Config, a layer above)
    which: str
    backbone: nn.Module
    checkpoint: str

    @property
    def channels(self) -> int:
        return input_channels(self.backbone)

    def normalisation(self, data: ImageArray) -> tuple[list[float], list[float]]:
        """(mean, std) for ``data``: the run's own on its pretraining dataset, else measured on
        ``data`` after channel matching (as a transfer evaluation does)."""
        d = self.cfg.data
        if data.name == d.dataset and d.mean is not None and d.std is not None:
            return list(d.mean), list(d.std)
        return channel_stats(match_channels(data.images, self.channels))

    def embed(
        self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
    ) -> torch.Tensor:
        """Features (N, D) float32 of uint8 ``images`` (N, C, H, W), any channel count."""
        return extract_features(
            self.backbone,
            match_channels(images, self.channels),
            size=self.cfg.views.size,
            mean=mean,
            std=std,
            precision=self.cfg.train.precision,
            device=resolve_device(self.cfg.train.device),
            batch_size=self.cfg.eval.batch_size,
        ).cpu()

    def load_split(self, dataset: str | None, split: str) -> ImageArray:
        """``split`` of ``dataset`` (default: the pretraining dataset) at the run's image size."""
        d = self.cfg.data
        return load_dataset(
            dataset or d.dataset, split, root=d.root, download=False, image_size=d.image_size
        )


def image_ids(data: ImageArray) -> list[int] | list[str]:
    """Each image's id: its file relative to the split folder for an image folder, else its
    position in the split."""
    return list(data.files) if data.files else list(range(len(data)))
