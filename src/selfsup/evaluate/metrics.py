"""Classification metrics from class scores: top-1 / top-5 accuracy, balanced accuracy, macro
F1, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def f1_macro(cm: torch.Tensor) -> float:
    """Unweighted mean of F1 = 2 TP / (2 TP + FP + FN) over the classes that occur in the
    targets or the predictions, as scikit-learn's ``f1_score(average="macro")`` without
    ``labels``: a class absent from both (e.g. from a test subset) is left out of the mean, not
    counted as 0."""
    tp = cm.diag().double()
    fp = cm.sum(0).double() - tp
    fn = cm.sum(1).double() - tp
    denom = 2 * tp + fp + fn
    present = denom > 0
    return float((2 * tp[present] / denom[present]).mean()) if bool(present.any()) else 0.0


def topk_accuracy(scores: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores (k capped at K)."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == target.view(-1, 1)).any(1).double().mean())


def classification_metrics(
    scores: torch.Tensor, target: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    """Metrics of class scores (N, K) (logits, probabilities or kNN votes) against labels (N,):
    ``top1`` (with ``top1_ci95``), ``top5``, ``balanced_acc`` (mean recall over the classes in
    ``target``, scikit-learn's ``balanced_accuracy_score``), ``f1_macro``, ``per_class_acc``
    (recall of each class; None for a class absent from ``target``) and ``confusion`` (rows
    true, columns predicted)."""
    scores, target = scores.float().cpu(), target.cpu()
    cm = confusion_matrix(scores.argmax(1), target, num_classes)
    support = cm.sum(1)
    per_class = [
        float(cm[c, c] / support[c]) if support[c] > 0 else None for c in range(num_classes)
    ]
    hits = scores.argmax(1) == target
    correct, n = int(hits.sum()), int(cm.sum())
    recalls = [r for r in per_class if r is not None]
    return {
        "top1": float(cm.diag().sum() / cm.sum().clamp_min(1)),
        "top1_ci95": list(wilson_interval(correct, n)),
        "top5": topk_accuracy(scores, target, 5),
        "balanced_acc": sum(recalls) / len(recalls) if recalls else 0.0,
        "f1_macro": f1_macro(cm),
        "per_class_acc": per_class,
        "confusion": cm.tolist(),
        "correct": pack_correct(hits),  # per test image, for paired tests (McNemar)
    }


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy ``correct / n`` (Wilson 1927): the uncertainty
    of a figure measured on ``n`` test images, valid near 0 and 1 where the normal one is not."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def pack_correct(correct: torch.Tensor) -> str:
    """Per-test-image correctness (N,) bool as compact text (base64 of packed bits, 10,000
    images in ~1.7 kB): what a paired test between two records needs."""
    bits = np.packbits(correct.cpu().numpy().astype(np.uint8))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
    """The (n,) bool array :func:`pack_correct` wrote."""
    bits = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(bits)[:n].astype(bool)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float | int]:
    """Exact McNemar test of two classifiers scored on the same test images (McNemar 1947;
    the exact form: a two-sided binomial test of the discordant pairs at p = 1/2). ``b``:
    images only A gets right, ``c``: only B; ``p``: the probability of a split at least this
    uneven if A and B were equally accurate."""
    if correct_a.shape != correct_b.shape:
        raise ValueError(
            f"a paired test needs the same test images; got {len(correct_a)} and {len(correct_b)}"
        )
    b = int((correct_a & ~correct_b).sum())
    c = int((~correct_a & correct_b).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p": p}
