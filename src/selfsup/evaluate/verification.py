"""Face verification accuracy on pairs, the LFW protocol (Huang et al., 2007).

Each pair is scored by the cosine similarity of its two feature vectors and called "same" when
the score exceeds a threshold. With the 10 folds of ``pairs.txt`` the threshold is chosen on 9
folds (the one with the best accuracy there) and the accuracy measured on the 10th; the
result is the mean over the 10 test folds with its standard deviation (as insightface's and
facenet's ``calculate_accuracy`` report) and the standard error of the mean (what the LFW
README asks results to give).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def pair_scores(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (P,) of feature rows (P, D) and (P, D)."""
    return (F.normalize(first.float(), dim=1) * F.normalize(second.float(), dim=1)).sum(1)


def accuracy_at(scores: torch.Tensor, same: torch.Tensor, threshold: float) -> float:
    """Share of pairs called right with "same" meaning ``score > threshold``."""
    return float(((scores > threshold) == same.bool()).float().mean())


def best_threshold(scores: torch.Tensor, same: torch.Tensor) -> float:
    """The threshold with the best accuracy on (``scores``, ``same``).

    The candidates are the midpoints between consecutive distinct scores and one below / above
    all of them, so every way of cutting the sorted scores is tried exactly once; among equally
    good cuts the one in the middle of the run of best candidates is taken."""
    values = torch.unique(scores.double())  # sorted
    candidates = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    calls = scores.double().view(1, -1) > candidates.view(-1, 1)  # (T, P)
    acc = (calls == same.bool().view(1, -1)).double().mean(1)
    best = (acc == acc.max()).nonzero().squeeze(1)
    return float(candidates[best[len(best) // 2]])


def verification_accuracy(
    scores: torch.Tensor, same: torch.Tensor, folds: torch.Tensor
) -> dict[str, Any]:
    """Cross-validated accuracy: for each fold, the threshold from the other folds, the
    accuracy on it. Returns ``{"mean", "std", "sem", "folds": [...], "thresholds": [...]}``
    (one fold alone: its own best threshold and accuracy, marked ``"cross_validated":
    False``)."""
    if not (scores.shape == same.shape == folds.shape) or scores.ndim != 1 or not len(scores):
        raise ValueError("scores, same and folds must be non-empty (P,) tensors of one shape")
    ids = torch.unique(folds).tolist()
    accs, thresholds = [], []
    for k in ids:
        test = folds == k
        fit = ~test if len(ids) > 1 else test
        t = best_threshold(scores[fit], same[fit])
        thresholds.append(t)
        accs.append(accuracy_at(scores[test], same[test], t))
    acc = torch.tensor(accs, dtype=torch.float64)
    std = float(acc.std(unbiased=False))
    return {
        "mean": float(acc.mean()),
        "std": std,
        "sem": float(acc.std(unbiased=True) / len(accs) ** 0.5) if len(accs) > 1 else 0.0,
        "folds": accs,
        "thresholds": thresholds,
        "cross_validated": len(ids) > 1,
        "n_pairs": len(scores),
    }
