"""Collapse monitors: healthy features pass, collapsing ones warn."""

from __future__ import annotations

import math

import torch

from selfsup.analysis.collapse import collapse_stats, collapse_warning


def test_spread_features_are_healthy() -> None:
    z = torch.randn(2000, 32, generator=torch.Generator().manual_seed(0))
    stats = collapse_stats(z)
    assert 0.9 < stats["feature_std"] < 1.1  # evenly spread: std ~ 1 / sqrt(D)
    assert stats["effective_rank"] > 25  # near full rank (32)
    assert collapse_warning(stats, 32) is None


def test_collapse_to_a_point_and_to_a_line_warn() -> None:
    g = torch.Generator().manual_seed(0)
    point = torch.ones(500, 32) + 1e-4 * torch.randn(500, 32, generator=g)
    stats = collapse_stats(point)
    assert stats["feature_std"] < 0.01
    assert "collapsing" in collapse_warning(stats, 32)
    line = torch.randn(500, 1, generator=g) * torch.randn(1, 32, generator=g)
    stats = collapse_stats(line)
    assert math.isclose(stats["effective_rank"], 1.0, abs_tol=0.05)
    assert collapse_warning(stats, 32) is not None


def test_online_monitor_logs_collapse_stats_with_and_without_labels() -> None:
    from selfsup.config import load_config
    from selfsup.data.array import seeded_subset
    from selfsup.data.sources import load_dataset
    from selfsup.pipeline import resolve
    from selfsup.run.callbacks import knn_monitor
    from selfsup.rundir import make_method
    from tiny import TINY

    cfg = load_config(None, [*TINY, "eval.monitor_limit=100"])
    data = seeded_subset(load_dataset("synthetic", "train", image_size=16), 128, 0)
    cfg = resolve(cfg, data)
    backbone = make_method(cfg, data.channels).backbone
    labelled = knn_monitor(cfg, data, torch.device("cpu"))(backbone, 1)
    assert {"monitor_knn_top1", "monitor_feature_std", "monitor_effective_rank"} <= set(labelled)
    data.labels[:] = -1  # an unlabeled split: collapse statistics only
    unlabeled = knn_monitor(cfg, data, torch.device("cpu"))(backbone, 1)
    assert "monitor_knn_top1" not in unlabeled and "monitor_feature_std" in unlabeled
