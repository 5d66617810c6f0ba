"""``train.tensorboard=true`` (issue #25): TensorBoard event files beside metrics.jsonl with
the same numbers, the monitors, and the saved embeddings in the projector; a clear error when
the package is missing."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from selfsup import tensorboard
from selfsup.cli import main
from selfsup.errors import ConfigError
from tiny import TINY

QUICK = ["train.epochs=2", "eval.protocols=[]", "eval.monitor_every=1", "eval.monitor_limit=64"]
QUICK += ["train.log_every=1", "viz.embed_epochs=[2]", "viz.embed_limit=40"]


def test_event_files_hold_the_metrics_the_monitor_and_the_embeddings(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["pretrain", "--config", "defaults", "--out", str(out), *TINY, *QUICK]
    assert main([*args, "train.tensorboard=true"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/invariance", "monitor/knn_top1"} <= set(scalars)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in recs if "loss" in r}
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert logged.keys() == losses.keys()
    assert all(abs(logged[s] - losses[s]) < 1e-5 * max(1.0, abs(losses[s])) for s in losses)
    assert len(events.Scalars("monitor/knn_top1")) == 2  # one per epoch
    projector = (out / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "backbone" in projector


def test_off_by_default_and_a_missing_package_is_a_clear_error(tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *TINY, *QUICK]) == 0
    assert not (out / "tensorboard").exists()
    monkeypatch.setattr(tensorboard.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'selfsup\[tensorboard\]'"):
        tensorboard.TensorBoardLog(tmp_path)
