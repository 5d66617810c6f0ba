"""Classification metrics from predictions: top-1 accuracy and macro F1."""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def f1_macro(cm: torch.Tensor) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class absent from both
    targets and predictions scores 0, as scikit-learn's ``f1_score(average="macro")``."""
    tp = cm.diag().double()
    fp = cm.sum(0).double() - tp
    fn = cm.sum(1).double() - tp
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    return float(f1.mean())


def classification_metrics(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """``top1`` (fraction correct) and ``f1_macro`` of predicted vs true labels (N,)."""
    cm = confusion_matrix(pred.cpu(), target.cpu(), num_classes)
    return {"top1": float(cm.diag().sum() / cm.sum().clamp_min(1)), "f1_macro": f1_macro(cm)}
