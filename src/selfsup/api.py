"""selfsup from Python, without the CLI: load a run, embed images, score a protocol.

    from selfsup.api import Run, load_images

    run = Run("runs/vicreg-fm")                    # a pretraining run directory
    test = load_images("fashion-mnist", "test")    # uint8 images + labels
    feats = run.embed(test.images[:1000])          # (1000, D) features, float32
    knn = run.score("knn", k=[20])                 # records, as in results.json

Nothing here writes into the run directory: :meth:`Run.score` returns its records (the CLI's
``selfsup eval`` is what merges them into ``results.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from selfsup.backbones.pixels import Pixels
from selfsup.config import Config, apply_overrides, config_from_dict, config_to_dict
from selfsup.data.array import ImageArray
from selfsup.data.sources import load_dataset
from selfsup.errors import SelfsupError
from selfsup.evaluate.harness import evaluate_backbone
from selfsup.features import extract_features, run_feature_kw
from selfsup.layout import RunDir
from selfsup.methods import Method
from selfsup.pipeline import eval_inputs, random_twin
from selfsup.precision import resolve_device
from selfsup.rundir import eval_backbone, load_run

__all__ = ["Run", "load_images"]


def load_images(dataset: str, split: str = "train", **kw: Any) -> ImageArray:
    """A dataset split as an :class:`~selfsup.data.array.ImageArray` (``.images`` uint8
    (N, C, H, W), ``.labels``, ``.classes``); ``kw`` as
    :func:`selfsup.data.sources.load_dataset` (``root``, ``download``, ``image_size``)."""
    return load_dataset(dataset, split, **kw)


class Run:
    """A finished (or checkpointed) run: its resolved config, trained method and backbone."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.config: Config
        self.method: Method
        self.config, self.method = load_run(self.dir)
        self.method.eval()
        self.device = resolve_device(self.config.train.device)
        # what the run evaluates (DINO, DINO-Twins: the EMA teacher; others: the student)
        self.which, self.backbone = eval_backbone(self.method, self.config.eval.backbone)

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"Run({str(self.dir)!r}: {cfg.method.name} on {cfg.data.dataset}, "
            f"{cfg.backbone.name}, {self.which})"
        )

    @property
    def results(self) -> dict[str, Any] | None:
        """``results.json``, or None before the run was evaluated."""
        path = RunDir(self.dir).results
        return json.loads(path.read_text()) if path.is_file() else None

    def embed(self, images: torch.Tensor | ImageArray, *, batch_size: int = 512) -> torch.Tensor:
        """Features (N, D) float32 of uint8 images (N, C, H, W), seen as the run's evaluation
        sees them (resized to its view size, normalised with its statistics, eval mode)."""
        if isinstance(images, ImageArray):
            images = images.images
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise SelfsupError("Run.embed takes uint8 images (N, C, H, W) or an ImageArray")
        kw = run_feature_kw(self.config, self.device)
        return extract_features(self.backbone, images, batch_size=batch_size, **kw)

    def score(
        self,
        protocol: str = "knn",
        *,
        dataset: str | None = None,
        baselines: Sequence[str] = (),
        **settings: Any,
    ) -> list[dict[str, Any]]:
        """Records of ``protocol`` ("knn", "linear", "finetune", ...) on ``dataset`` (the run's
        own by default), fitted on its training split and scored on its test split, as the CLI
        computes them; ``settings`` are that protocol's ``eval.<protocol>.*`` keys (``k=[20]``)
        or ``eval.*`` keys (``train_limit=5000``). ``baselines``: also "random" (a randomly
        initialised twin) and / or "pixels" (knn, linear)."""
        cfg = self.config
        overrides = [
            f"eval.{protocol + '.' if _nested(k) else ''}{k}={json.dumps(v)}"
            for k, v in settings.items()
        ]
        eval_cfg = (
            config_from_dict(apply_overrides(config_to_dict(cfg), overrides)).eval
            if overrides
            else cfg.eval
        )
        common = eval_inputs(cfg, [dataset or cfg.data.dataset], [protocol], self.device)
        own = (cfg.data.mean, cfg.data.std)  # the inputs the backbone was trained on
        records = evaluate_backbone(self.backbone, eval_cfg, init="pretrained", norm=own, **common)
        for base in baselines:
            if base not in ("random", "pixels"):
                raise SelfsupError(f"unknown baseline {base!r}; valid: random, pixels")
            net = random_twin(cfg) if base == "random" else Pixels(len(own[0]), cfg.views.size)
            norm = None if base == "pixels" else own
            records += evaluate_backbone(net, eval_cfg, init=base, norm=norm, **common)
        return records


def _nested(key: str) -> bool:
    """A protocol's own setting (``k``, ``l2``, ``lrs``...) rather than an ``eval.*`` key."""
    from selfsup.config import EvalConfig

    return key not in EvalConfig.__dataclass_fields__
