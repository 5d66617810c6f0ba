"""The ``data`` and ``views`` sections of a config: what to train on and how it is viewed."""

from __future__ import annotations

from dataclasses import dataclass

from selfsup.data.classes import parse_class_spec
from selfsup.data.imagefolder import BAD_IMAGE
from selfsup.fields import AT_LEAST_1, POSITIVE, SIDE, SIDE_LIMIT, setting

ON_DEVICE = ("auto", "always", "never")
"""``data.on_device``: whether the uint8 training images live on the GPU (see
:func:`selfsup.train.loop.images_on_device`)."""


@dataclass
class DataConfig:
    # cifar10 | cifar100 | stl10 | fashion-mnist | imagefolder:PATH | ...
    dataset: str = "synthetic"
    split: str = "train"  # the split pretraining reads (stl10: unlabeled, train+unlabeled)
    root: str | None = None  # data root; None: $SELFSUP_DATA or ~/.cache/selfsup
    download: bool = False  # allow torchvision to download a missing dataset
    # use at most this many training images (a seeded random subset)
    limit: int | None = setting(
        None, valid=AT_LEAST_1, what="images to train on; null uses them all"
    )
    # decode size for imagefolder / synthetic
    image_size: int | None = setting(
        None, valid=SIDE, what=f"decoded side in pixels; null: the dataset's own; {SIDE_LIMIT}"
    )
    mean: list[float] | None = None  # per-channel normalisation; None: measured on the data
    std: list[float] | None = setting(
        None, valid=POSITIVE, what="per-channel std; null measures it on the data"
    )
    # skip (listed in the cache's bad-image report) | fail
    on_bad_image: str = setting("skip", choices=BAD_IMAGE)
    # keep only these classes, relabelled 0..K-1 in this order (names kept): a list of class
    # indices or ranges such as "0-49"; null keeps every class (see selfsup.data.classes)
    classes: list[int] | str | None = None
    # the training images on the GPU: auto (when they fit beside the model), always, never
    # (read ahead from the host each step); a CPU run keeps them where they are
    on_device: str = setting("auto", choices=ON_DEVICE)

    def check(self) -> None:
        parse_class_spec(self.classes, "data.classes")


@dataclass
class ViewsConfig:
    # output side of the (global) views; None: the images' own size
    size: int | None = setting(
        None, valid=SIDE, what=f"view side in pixels; null: the images' own size; {SIDE_LIMIT}"
    )
    # RandomResizedCrop scale; None: the method's own
    crop_scale: list[float] | None = setting(None, scale="null takes the method's own")
    compile: bool = False  # torch.compile the view ops (2-core CPU: no faster than eager)
