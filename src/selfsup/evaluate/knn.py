"""Weighted k-nearest-neighbour classifier on frozen features.

``knn_classifier`` of facebookresearch/dino eval_knn.py: features are L2-normalised, each test
sample's k most cosine-similar training samples vote for their class with weight
``exp(similarity / T)`` (k = 20 or 200, T = 0.07 in DINO), and the class with the largest
summed weight wins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores (M, num_classes) of test features (M, D) from a bank (N, D), labels (N,)."""
    if len(train_features) == 0:
        raise ValueError("kNN needs at least one training feature")
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_features))
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(bank.device).long()
    scores = []
    for start in range(0, len(test_features), chunk):
        q = F.normalize(test_features[start : start + chunk].float().to(bank.device), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(len(q), num_classes, device=bank.device)
        votes.scatter_add_(1, labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.empty(0, num_classes)
