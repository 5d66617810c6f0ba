"""Retrieval: exact and ANNOY neighbours, recall@k, precision@k, and `selfsup viz retrieval`."""

from __future__ import annotations

import pytest
import torch

from selfsup.analysis.retrieval import (
    annoy_index,
    annoy_neighbours,
    exact_neighbours,
    precision_at_k,
    recall_at_k,
)
from selfsup.cli import main
from tiny import TINY


def clustered(n: int, d: int = 16, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=g) * 3
    return centres[labels] + torch.randn(n, d, generator=g), labels


def test_exact_neighbours_are_the_most_and_least_cosine_similar() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    query = torch.tensor([[2.0, 0.1]])
    assert exact_neighbours(bank, query, 2).tolist() == [[0, 3]]
    assert exact_neighbours(bank, query, 1, dissimilar=True).tolist() == [[2]]
    assert exact_neighbours(bank, query, 10).shape == (1, 4)  # k capped at the bank


def test_precision_at_k_is_the_share_of_neighbours_of_the_querys_class() -> None:
    idx = torch.tensor([[0, 1, 2], [3, 3, 0]])
    bank_labels = torch.tensor([0, 0, 1, 1])
    assert precision_at_k(idx, bank_labels, torch.tensor([0, 1])) == pytest.approx(4 / 6)


def test_annoy_finds_the_exact_neighbours_on_a_small_set() -> None:
    """ANNOY's approximate neighbours against exact search: recall@10 near 1 on 500 points,
    for the most and for the least similar (the neighbours of the negated query)."""
    bank, _ = clustered(500)
    query, _ = clustered(50, seed=1)
    index = annoy_index(bank)
    for dissimilar in (False, True):
        found = annoy_neighbours(index, query, 10, dissimilar=dissimilar)
        exact = exact_neighbours(bank, query, 10, dissimilar=dissimilar)
        assert recall_at_k(found, exact) >= 0.9, dissimilar
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(exact_neighbours(bank, query, 10), exact) < 0.2  # the measure can fail


def test_viz_retrieval_draws_the_grid_and_reports_precision_and_recall(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    quick = [
        *TINY,
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
    ]
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *quick]) == 0
    capsys.readouterr()
    assert main(["viz", "retrieval", str(out), "-k", "4", "--queries", "3"]) == 0
    text = capsys.readouterr().out
    for name in ("pretrained", "random init", "raw pixels"):
        assert f"  {name}: " in text
    assert "ANNOY recall@4 against exact search:" in text
    png = (out / "plots" / "retrieval.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert main(["viz", "retrieval", str(out), "-k", "0"]) == 2  # a clear error, not a crash


def test_embeddings_saved_over_epochs_become_one_tsne_panel_each(tmp_path, capsys) -> None:
    """viz.embed_epochs saves the same class-balanced sample's features after those epochs;
    `selfsup viz tsne` draws a panel per saved epoch; without any, a clear error."""
    import numpy as np

    out = tmp_path / "run"
    quick = [
        *TINY,
        "train.epochs=3",
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
        "viz.embed_epochs=[1,3]",
        "viz.embed_limit=60",
    ]
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *quick]) == 0
    saved = sorted(p.name for p in (out / "embeddings").glob("epoch-*.npy"))
    assert saved == ["epoch-0001.npy", "epoch-0003.npy"]
    first, last = (np.load(out / "embeddings" / n) for n in saved)
    labels = np.load(out / "embeddings" / "labels.npy")
    assert first.shape == last.shape == (len(labels), 16) and not np.allclose(first, last)
    assert len(labels) <= 60 and len(set(labels.tolist())) > 1  # class-balanced sample
    capsys.readouterr()
    assert main(["viz", "tsne", str(out)]) == 0
    png = (out / "plots" / "tsne.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    bare = tmp_path / "bare"
    assert main(["pretrain", "--config", "defaults", "--out", str(bare), *quick[:-2]]) == 0
    # a run that saved none is embedded now, with its final checkpoint (issue #25.10)
    assert main(["viz", "tsne", str(bare)]) == 0
    assert "viz.embed_epochs" in capsys.readouterr().out
    assert [p.name for p in (bare / "embeddings").glob("epoch-*.npy")] == ["epoch-0003.npy"]
