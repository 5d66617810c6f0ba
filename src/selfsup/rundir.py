"""The run directory: the unit of provenance.

``config.yaml`` (fully resolved), ``env.json`` (versions, git sha, command), ``metrics.jsonl``,
``checkpoints/last.pt``, ``results.json``. Every file is written atomically.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
import yaml
from torch import nn

import selfsup
from selfsup.analysis.encoder import Encoder, checkpoint_hash
from selfsup.checkpoint import load_checkpoint
from selfsup.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    migrate_saved,
)
from selfsup.errors import ConfigError, SelfsupError
from selfsup.layout import RunDir
from selfsup.methods import Method, build_method
from selfsup.records import record_key


def git_sha() -> str | None:
    """The commit of the selfsup source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(selfsup.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "selfsup": selfsup.__version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "command": sys.argv,
    }


def read_results(run_dir: Path) -> dict[str, Any] | None:
    path = RunDir(run_dir).results
    return json.loads(path.read_text()) if path.exists() else None


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    keys = {record_key(r) for r in new}
    return [r for r in old if record_key(r) not in keys] + new


def make_method(cfg: Config, channels: int) -> Method:
    torch.manual_seed(cfg.seed)
    return build_method(
        cfg, in_channels=channels, image_size=cfg.views.size, mean=cfg.data.mean, std=cfg.data.std
    )


def saved_config(run_dir: Path, overrides: Sequence[str] = (), *, doing: str) -> Config:
    """The run's saved ``config.yaml`` with ``overrides`` applied: the one reader of a saved
    config (resuming, evaluating, teachers). ``doing`` names the action for the error when
    ``run_dir`` holds no run."""
    cfg_path = RunDir(run_dir).config
    if not cfg_path.is_file():
        raise SelfsupError(f"cannot {doing}: {run_dir} holds no run (no config.yaml)")
    saved = migrate_saved(yaml.safe_load(cfg_path.read_text()) or {})
    return config_from_dict(apply_overrides(saved, list(overrides)))


RESUME_MAY_CHANGE = (
    "train.epochs",  # extend (or end sooner) a run; the lr schedule follows the new length
    "train.progress",
    "train.log_every",
    "train.checkpoint_every",
    "train.skip_nonfinite",
    "data.on_device",  # where the images live: the same batches either way
    "eval.",  # how the trained backbone is measured, except ...
    "viz.",  # pictures of the representation saved along the way
)
"""Keys ``--resume`` accepts a new value for (a prefix ending in "." covers a section): none
changes what the steps already taken did or the data they read."""
RESUME_FIXED = ("eval.val_images",)  # ... the held-out carve, which decides the training images


def resume_config(run_dir: Path, overrides: Sequence[str] = ()) -> Config:
    """The saved config of the run to continue, with ``overrides`` of the keys that may change
    on resume (:data:`RESUME_MAY_CHANGE`); any other change is a ConfigError listing each
    difference as ``key: saved -> asked`` (it would train on settings the run never used and
    rewrite its config.yaml with them)."""
    saved = config_to_dict(saved_config(run_dir, doing="resume"))
    cfg = saved_config(run_dir, overrides, doing="resume")
    changed = {
        key: pair
        for key, pair in _differences(saved, config_to_dict(cfg)).items()
        if key in RESUME_FIXED or not key.startswith(RESUME_MAY_CHANGE)
    }
    if changed:
        lines = "".join(f"\n  {key}: {a!r} -> {b!r}" for key, (a, b) in changed.items())
        allowed = ", ".join(k + "*" if k.endswith(".") else k for k in RESUME_MAY_CHANGE)
        raise ConfigError(
            f"--resume continues {run_dir} with the config it was trained with, but these "
            f"overrides change it:{lines}\nOn resume only {allowed} may change (not "
            f"{', '.join(RESUME_FIXED)}); to train with other settings start a new run "
            "(another --out, or --overwrite to replace this one)"
        )
    return cfg


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict:
    """``{dotted key: (old value, new value)}`` where two nested dicts differ."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out[prefix + key] = (a, b)
    return out


EVAL_MAY_CHANGE = ("eval.", "data.download=")
"""What an evaluation of a finished run may set: how it is measured, and whether a missing
dataset may be downloaded (``eval RUN --dataset cifar10 data.download=true``); nothing else
of what it was trained on."""


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> Config:
    """A finished run's saved ``config.yaml``, with ``eval.*`` and ``data.download``
    overrides applied."""
    for text in overrides:
        if not text.startswith(EVAL_MAY_CHANGE):
            raise SelfsupError(
                f"{text!r}: only eval.* keys and data.download can be changed when evaluating "
                "a finished run"
            )
    return saved_config(run_dir, overrides, doing="evaluate")


def load_run(run_dir: Path, overrides: Sequence[str] = ()) -> tuple[Config, Method]:
    """The config (with ``eval.*`` overrides applied) and the trained method of a run."""
    cfg = load_run_config(run_dir, overrides)
    cfg.backbone.weights = None  # the run's checkpoint replaces any starting weights
    ckpt = load_checkpoint(RunDir(run_dir).checkpoint)
    channels = len(cfg.data.mean or [])
    method = make_method(cfg, channels)
    try:
        method.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise SelfsupError(
            f"the checkpoint of {run_dir} does not match its config.yaml ({err}); was the "
            "config edited after training?"
        ) from None
    return cfg, method


def load_teacher_run(run_dir: Path) -> tuple[Config, Method, np.ndarray | None]:
    """A pseudo-label teacher run (:data:`selfsup.evaluate.context.LoadRun`): its config, its
    trained method and the fingerprints of the images whose labels it trained on (None when
    it does not record them)."""
    cfg, method = load_run(run_dir)
    path = RunDir(run_dir).labelled_images
    seen = np.load(path, allow_pickle=False) if path.is_file() else None
    return cfg, method, seen


def eval_backbone(method: Method, choice: str) -> tuple[str, nn.Module]:
    """(name, backbone) to evaluate for ``eval.backbone=choice``: auto picks the method's
    official one (DINO's EMA teacher, every other method's student)."""
    available = method.eval_backbones()
    name = method.official_eval if choice == "auto" else choice
    if name not in available:
        raise ConfigError(
            f"eval.backbone={choice!r}: {type(method).__name__} has no {name} backbone; valid: "
            f"auto, {', '.join(available)}"
        )
    return name, available[name]


def load_encoder(run_dir: str | Path) -> Encoder:
    """A finished run as an image encoder: its config, the backbone its evaluation uses
    (``eval.backbone``) in eval mode, and the hash of the checkpoint it was read from."""
    run_dir = Path(run_dir)
    cfg, method = load_run(run_dir)
    which, backbone = eval_backbone(method, cfg.eval.backbone)
    return Encoder(run_dir, cfg, which, backbone.eval(), checkpoint_hash(run_dir))
