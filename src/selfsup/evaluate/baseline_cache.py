"""Raw-pixel baselines computed once and reused (issue #25.1).

The pixels' kNN and linear probe depend only on the images (the training and test splits as
loaded and limited), the evaluation settings and the seed, never on the run: on the shipped
VICReg recipe the pixels' probe alone took 459 s of a 13-minute evaluation, for every run.
:func:`cached_records` keys the records by a hash of all of that (plus selfsup's version and
:data:`VERSION`, so a change to a protocol invalidates every entry) and keeps them as JSON in
``$SELFSUP_CACHE`` (default ``~/.cache/selfsup``)``/baselines/``; ``SELFSUP_CACHE=off`` turns
the cache off. An unreadable or malformed entry is recomputed, never trusted; JSON only, so
nothing in the cache can run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import selfsup
from selfsup.atomic import write_json_atomic
from selfsup.data.array import ImageArray
from selfsup.evaluate.config import EvalConfig

VERSION = 2  # raise when a pixel protocol's result would change for the same inputs
# 2: views from 112 px are centre-cropped (Resize(size / 0.875) + CenterCrop), issue #24.7b
# EvalConfig fields that cannot change a pixel record (which runs, monitors, other protocols'
# batch size): every other field is in the key
IRRELEVANT = ("compare_random", "compare_pixels", "protocols", "backbone", "datasets")
IRRELEVANT += ("monitor_every", "monitor_limit", "monitor_minutes", "val_images", "batch_size")


def cache_dir() -> Path | None:
    """Where the baselines are kept; None when ``SELFSUP_CACHE=off``."""
    root = os.environ.get("SELFSUP_CACHE", "")
    if root.lower() in ("off", "0", "no", "false"):
        return None
    return Path(root).expanduser() if root else Path.home() / ".cache" / "selfsup"


def baseline_key(
    cfg: EvalConfig,
    splits: dict[str, tuple[ImageArray, ImageArray]],
    protocols: list[str],
    **inputs: Any,
) -> str:
    """A hash of everything a pixel baseline's records depend on: the splits' contents (in
    order, labels included), the evaluation settings, the protocols and ``inputs`` (seed, view
    size, channels, ...)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in IRRELEVANT}
    data = {name: [tr.content_id(), te.content_id()] for name, (tr, te) in splits.items()}
    what = {"version": [selfsup.__version__, VERSION], "settings": settings, "data": data}
    what.update(protocols=protocols, **inputs)
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_records(key: str, compute: Callable[[], list[dict]]) -> list[dict]:
    """The records stored under ``key``, else ``compute()``'s, stored for the next run."""
    root = cache_dir()
    path = None if root is None else root / "baselines" / f"{key}.json"
    if path is not None and path.is_file():
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError):
            records = None
        if isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
            print(f"selfsup: raw-pixel baselines reused from {path}", file=sys.stderr)
            return records
    records = compute()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, records)
        except OSError as err:  # a read-only home: the run goes on without the cache
            print(f"selfsup: could not cache the pixel baselines in {path}: {err}", file=sys.stderr)
    return records
