"""Class-disjoint splits on files in CIFAR-100's pickle format: ``data.classes`` keeps the
classes pretraining sees, ``eval.classes`` those evaluation fits and scores, both relabelled
0..K-1 with their names kept."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fakedata import write_cifar100
from selfsup import pipeline
from selfsup.config import Config, load_config
from selfsup.data.array import ImageArray
from selfsup.data.classes import parse_class_spec
from selfsup.errors import ConfigError
from selfsup.evaluate.harness import load_eval_splits
from selfsup.pipeline import load_pretrain_data, pretrain
from tiny import TINY


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("data")
    return SimpleNamespace(root=root, **write_cifar100(root, n_train=300, n_test=200, seed=5))


def config(root: Path, *overrides: str) -> Config:
    base = [*TINY, "data.dataset=cifar100", f"data.root={root}", "data.limit=null"]
    return load_config(None, [*base, "train.device=cpu", "views.size=16", *overrides])


def prints(images: np.ndarray | torch.Tensor) -> np.ndarray:
    images = torch.as_tensor(images)
    return ImageArray(images, torch.zeros(len(images), dtype=torch.int64)).fingerprints()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0-2,5", [0, 1, 2, 5]), ("50-99", list(range(50, 100))), ([7, 3], [7, 3]), (None, None)],
)
def test_class_specs_parse(spec, expected) -> None:
    assert parse_class_spec(spec, "data.classes") == expected


@pytest.mark.parametrize("spec", ["0-", "a-3", "5-2", "1,1", "-3"])
def test_bad_class_specs_are_refused_when_the_config_loads(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.classes"):
        load_config(None, [f"data.classes={spec!r}"])


def test_pretraining_sees_only_its_classes_relabelled(cifar: SimpleNamespace) -> None:
    images, labels = cifar.train
    data = load_pretrain_data(config(cifar.root, "data.classes=50-99"))
    kept = labels >= 50
    assert 0 < kept.sum() < len(labels)
    assert np.array_equal(prints(data.images), prints(images[kept]))
    assert torch.equal(data.labels, torch.from_numpy(labels[kept] - 50))
    assert data.classes == cifar.classes[50:]


def test_evaluation_keeps_its_classes_in_the_listed_order(cifar: SimpleNamespace) -> None:
    chosen = [7, 3, 60, 99, 12]
    cfg = config(cifar.root, f"eval.classes={chosen}")
    splits = load_eval_splits(
        "cifar100", cfg.eval, root=str(cifar.root), download=False, image_size=None
    )
    for data, (images, labels) in zip(splits, (cifar.train, cifar.test), strict=True):
        kept = np.isin(labels, chosen)
        assert kept.any()
        assert np.array_equal(prints(data.images), prints(images[kept]))
        assert data.labels.tolist() == [chosen.index(c) for c in labels[kept]]
        assert data.classes == [cifar.classes[c] for c in chosen]


def test_a_class_index_outside_the_dataset_names_the_valid_range(cifar: SimpleNamespace) -> None:
    cfg = config(cifar.root, "eval.classes=[3,100]")
    with pytest.raises(ConfigError, match=r"class index 100 .* valid indices are 0-99"):
        load_eval_splits(
            "cifar100", cfg.eval, root=str(cifar.root), download=False, image_size=None
        )
    with pytest.raises(ConfigError, match="valid indices are 0-99"):
        load_pretrain_data(config(cifar.root, "data.classes=90-120"))


def test_pretrain_on_half_the_classes_evaluate_on_the_other_half(
    cifar: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real = pipeline.train_run

    def spy(method, images, *args, **kw):
        seen.append(images)
        return real(method, images, *args, **kw)

    monkeypatch.setattr(pipeline, "train_run", spy)
    cfg = config(
        cifar.root,
        "data.classes=50-99",
        "eval.classes=0-49",
        "train.epochs=1",
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
        "eval.train_limit=null",
        "eval.test_limit=null",
    )
    results = pretrain(cfg, tmp_path / "run")
    (images,) = seen
    train_images, train_labels = cifar.train
    assert set(prints(images).tolist()) == set(prints(train_images[train_labels >= 50]).tolist())
    assert results["classes"]["cifar100"] == cifar.classes[:50]
    (rec,) = results["evals"]
    assert rec["n_train"] == int((train_labels < 50).sum())
    assert rec["n_test"] == int((cifar.test[1] < 50).sum())
    assert rec["settings"]["classes"] == "0-49"
    assert len(rec["confusion"]) == 50
