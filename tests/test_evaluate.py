from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, top_k_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion

from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import (
    carve_validation,
    epochs_for,
    fit_linear,
    select_and_fit_linear,
)
from selfsup.evaluate.metrics import classification_metrics, confusion_matrix


def reference_knn(train, labels, test, k, t, num_classes):
    """DINO eval_knn.py, one test sample at a time with plain loops."""
    preds = []
    for q in test:
        qn = q / q.norm()
        sims = [(float(qn @ (x / x.norm())), int(y)) for x, y in zip(train, labels, strict=True)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for s, y in sims[:k]:
            votes[y] += math.exp(s / t)
        preds.append(max(range(num_classes), key=lambda c: votes[c]))
    return preds


def test_knn_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    train = centres[labels] + 0.8 * torch.randn(60, 8, generator=g)
    test = centres[torch.randint(0, 4, (25,), generator=g)] + 0.8 * torch.randn(25, 8, generator=g)
    for k in (1, 5, 20):
        scores = knn_predict(train, labels, test, k=k, temperature=0.07, num_classes=4, chunk=7)
        assert scores.argmax(1).tolist() == reference_knn(train, labels, test, k, 0.07, 4)


def test_knn_k_larger_than_bank() -> None:
    scores = knn_predict(torch.eye(3), torch.tensor([0, 1, 2]), torch.eye(3), k=200)
    assert scores.argmax(1).tolist() == [0, 1, 2]


def test_metrics_match_sklearn() -> None:
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 5, (200,), generator=g)
    pred = torch.where(
        torch.rand(200, generator=g) < 0.6, target, torch.randint(0, 5, (200,), generator=g)
    )
    pred[pred == 4] = 3  # class 4 never predicted
    scores = torch.rand(200, 7, generator=g) * 0.5  # 7 classes, 5 and 6 absent from targets
    scores[torch.arange(200), pred] = 1.0  # the argmax is pred
    m = classification_metrics(scores, target, 7)
    assert math.isclose(m["top1"], float((pred == target).float().mean()))
    assert math.isclose(m["f1_macro"], f1_score(target, pred, average="macro"))  # 5 classes
    assert m["f1_macro"] > f1_score(target, pred, average="macro", labels=range(7), zero_division=0)
    assert math.isclose(m["balanced_acc"], balanced_accuracy_score(target, pred))
    assert m["top5"] == top_k_accuracy_score(target, scores, k=5, labels=range(7))
    assert m["top5"] > m["top1"]
    assert m["confusion"] == sk_confusion(target, pred, labels=range(7)).tolist()
    recall = recall_score(target, pred, average=None, labels=range(5), zero_division=0)
    assert m["per_class_acc"][:5] == pytest.approx(list(recall))
    assert m["per_class_acc"][5:] == [None, None]  # no true example: undefined, not 0
    cm = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
    assert cm.tolist() == [[1, 1], [0, 1]]


def test_carve_validation_is_disjoint_and_seeded() -> None:
    fit, val = carve_validation(100, 0.2, seed=0)
    assert len(val) == 20 and len(fit) == 80
    assert set(fit.tolist()).isdisjoint(val.tolist())
    assert torch.equal(val, carve_validation(100, 0.2, seed=0)[1])
    assert not torch.equal(val, carve_validation(100, 0.2, seed=1)[1])
    with pytest.raises(ValueError):
        carve_validation(10, 1.0, seed=0)


def test_linear_probe_learns_and_selects_on_validation() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 3, generator=g)
    x = torch.randn(600, 16, generator=g)
    y = (x @ w).argmax(1)
    probe, choice = select_and_fit_linear(x[:500], y[:500], 3, l2s=[1e-4, 1e-2, 1.0, 100.0])
    acc = float((probe.predict(x[500:]).argmax(1) == y[500:]).float().mean())
    assert acc > 0.9
    assert choice["l2"] in (1e-4, 1e-2) and 0.9 < choice["val_top1"] <= 1.0


def test_a_larger_penalty_wins_on_validation_when_the_fit_overfits() -> None:
    """Imbalanced classes (15% positive), one weak feature among 300: a weakly penalised probe
    memorises the 100 fitting images, a strong one keeps to the prior; the sweep must see the
    difference on validation and choose the strong penalty (the old AdamW weight-decay sweep
    could not: its three choices fitted the same probe and a tie kept the weakest)."""
    g = torch.Generator().manual_seed(0)
    n, d = 200, 300
    y = (torch.rand(n + 2000, generator=g) < 0.15).long()
    x = torch.randn(n + 2000, d, generator=g)
    x[:, 0] += y
    weak = fit_linear(x[:n], y[:n], 2, l2=1e-6)
    strong = fit_linear(x[:n], y[:n], 2, l2=10.0)
    assert weak.layer.weight.norm() > 10 * strong.layer.weight.norm()  # the penalty acts
    probe, choice = select_and_fit_linear(
        x[:n], y[:n], 2, l2s=[1e-6, 1e-3, 0.1, 1.0, 10.0], val_fraction=0.5
    )
    sweep = choice["val_sweep"]
    assert choice["l2"] >= 1.0 and sweep[choice["l2"]] > sweep[1e-6] + 0.02, sweep
    acc = lambda p: float((p.predict(x[n:]).argmax(1) == y[n:]).float().mean())  # noqa: E731
    assert acc(probe) > acc(weak) + 0.05  # ... and it generalises better on unseen images


def test_linear_probe_is_scikit_learns_logistic_regression() -> None:
    """mean CE + l2 / 2 ||W||^2 is LogisticRegression(C = 1 / (l2 * n)) on the same
    standardised features: the same minimiser, so the same predictions and near weights."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 8, generator=g) * torch.linspace(0.5, 3, 8) + 2
    y = (x[:, :3] @ torch.randn(3, 4, generator=g)).argmax(1)
    l2 = 1e-2
    probe = fit_linear(x, y, 4, l2=l2)
    z = ((x - probe.mean) / probe.std).double().numpy()
    ref = LogisticRegression(C=1 / (l2 * len(x)), tol=1e-10, max_iter=10_000).fit(z, y.numpy())
    ours = probe.predict(x).argmax(1).numpy()
    assert (ours == ref.predict(z)).mean() >= 0.995
    # softmax weights are defined up to a shared shift; the L2 penalty makes both sum to 0
    torch.testing.assert_close(
        probe.layer.weight.double(), torch.from_numpy(ref.coef_), rtol=0, atol=2e-3
    )


def test_small_training_sets_get_at_least_min_steps() -> None:
    """1% of the labels at a normal batch size would otherwise be a handful of updates."""
    assert epochs_for(steps_per_epoch=1, epochs=10, min_steps=300) == 300
    assert epochs_for(steps_per_epoch=40, epochs=10, min_steps=300) == 10  # already enough
    assert epochs_for(steps_per_epoch=7, epochs=2, min_steps=30) == 5  # ceil(30 / 7)


def test_pixels_baseline_features_are_the_normalised_image() -> None:
    from selfsup.backbones.pixels import Pixels
    from selfsup.features import extract_features, input_channels

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8, generator=g)
    net = Pixels(1, 8)
    assert input_channels(net) == 1 and net.num_features == 64
    feats = extract_features(net, images, size=8, mean=[0.3], std=[0.2])
    want = ((images.float() / 255 - 0.3) / 0.2).flatten(1)
    torch.testing.assert_close(feats, want, rtol=1e-5, atol=1e-5)


def test_a_feature_constant_on_train_does_not_blow_up_at_test() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = (x[:, 0] > 0).long()
    near_constant = 1e-8 * torch.randn(200, 1, generator=g)  # e.g. an almost dead unit
    x = torch.cat([x, near_constant], dim=1)  # feature 3 is (nearly) constant on train
    probe = fit_linear(x, y, 2, l2=1e-3)
    test = torch.randn(50, 3, generator=g)
    shifted = torch.cat([test, torch.full((50, 1), 0.5)], dim=1)  # ... and shifted at test
    clean = torch.cat([test, torch.zeros(50, 1)], dim=1)
    agree = (probe.predict(shifted).argmax(1) == probe.predict(clean).argmax(1)).float().mean()
    assert agree == 1.0  # the constant feature does not move the decision (it used to flip it)
    assert probe.predict(shifted).abs().max() < 100


def test_wilson_interval_matches_scipy() -> None:
    from scipy.stats import binomtest

    from selfsup.evaluate.metrics import wilson_interval

    for k, n in ((875, 1000), (0, 20), (20, 20), (8754, 10000), (3, 7)):
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson_interval(k, n)
        assert math.isclose(lo, ref.low, abs_tol=1e-6) and math.isclose(hi, ref.high, abs_tol=1e-6)
