"""Class subsets of a labelled split: ``data.classes`` (what pretraining sees) and
``eval.classes`` (what evaluation fits and scores), e.g. pretrain on 50 CIFAR-100 classes and
evaluate on the other 50 (a class-disjoint transfer test).

A spec is a list of class indices (``[0, 3, 7]``), a string of indices and inclusive ranges
(``"0-49"``, ``"50-99"``, ``"0-9,20,30-39"``), or None (every class). The kept classes are
relabelled 0..K-1 in the order the spec lists them, and keep their names.
"""

from __future__ import annotations

import torch

from selfsup.data.array import ImageArray
from selfsup.errors import ConfigError, DataError

ClassSpec = list[int] | str | None


def parse_class_spec(spec: ClassSpec, key: str) -> list[int] | None:
    """The class indices ``spec`` names, in order, or None for every class. A malformed spec,
    a negative index or a repeated class is a ConfigError naming ``key``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        indices: list[int] = []
        for part in (p.strip() for p in spec.split(",")):
            lo, dash, hi = part.partition("-")
            if not lo.strip().isdigit() or (dash and not hi.strip().isdigit()):
                raise ConfigError(
                    f"{key}={spec!r} is not a class list: write indices and inclusive ranges "
                    'such as "0-49" or "0-9,20,30-39", or a list [0, 3, 7]'
                )
            first, last = int(lo), int(hi) if dash else int(lo)
            if last < first:
                raise ConfigError(f"{key}={spec!r}: the range {part!r} runs backwards")
            indices.extend(range(first, last + 1))
    else:
        indices = list(spec)
    if not indices:
        raise ConfigError(f"{key}=[] keeps no class; give at least one, or null for all")
    if min(indices) < 0:
        raise ConfigError(f"{key}={spec!r} has a negative class index; indices start at 0")
    if len(set(indices)) != len(indices):
        raise ConfigError(f"{key}={spec!r} names a class twice")
    return indices


def select_classes(data: ImageArray, spec: ClassSpec, key: str) -> ImageArray:
    """The images of ``data`` whose class is in ``spec``, relabelled 0..K-1 in the spec's
    order, with ``classes`` the kept names; ``data`` itself when ``spec`` is None. An index
    outside the dataset's classes is a ConfigError naming the valid range."""
    chosen = parse_class_spec(spec, key)
    if chosen is None:
        return data
    if not data.has_labels:
        raise DataError(
            f"{key}={spec!r}: {data.name} split {data.split!r} has no labels, so its images "
            f"cannot be chosen by class; use a labelled split or set {key}=null"
        )
    n_classes = max(len(data.classes), int(data.labels.max()) + 1)
    bad = [c for c in chosen if c >= n_classes]
    if bad:
        raise ConfigError(
            f"{key}: class index {bad[0]} does not exist in {data.name or 'the dataset'}; "
            f"valid indices are 0-{n_classes - 1} ({n_classes} classes)"
        )
    new_label = torch.full((n_classes,), -1, dtype=torch.int64)
    new_label[torch.tensor(chosen)] = torch.arange(len(chosen))
    labels = data.labels.cpu()
    keep = (labels >= 0).nonzero().squeeze(1)
    keep = keep[new_label[labels[keep]] >= 0]
    subset = data.subset(keep)
    names = [data.classes[c] if c < len(data.classes) else str(c) for c in chosen]
    return ImageArray(subset.images, new_label[labels[keep]], names, data.name, data.split)
