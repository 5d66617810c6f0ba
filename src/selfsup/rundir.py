"""The run directory: the unit of provenance.

``config.yaml`` (fully resolved), ``env.json`` (versions, git sha, command), ``metrics.jsonl``,
``checkpoints/last.pt``, ``results.json``. Every file is written atomically.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision

import selfsup
from selfsup.evaluate.table import measurement_key

# fingerprints (ImageArray.fingerprints) of the images whose labels a supervised / joint run used
LABELLED_IMAGES = "labelled_images.npy"


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
    path = run_dir / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def record_key(rec: dict[str, Any]) -> tuple:
    """Records with the same key replace each other when a run is evaluated again: the same
    measurement (:func:`selfsup.evaluate.table.measurement_key`, settings included) and seed."""
    return (*measurement_key(rec), rec.get("seed"))


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    keys = {record_key(r) for r in new}
    return [r for r in old if record_key(r) not in keys] + new
