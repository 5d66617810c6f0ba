"""The ``viz`` section of a config: pictures of the representation saved during training
(``selfsup viz tsne / corr RUN``)."""

from __future__ import annotations

from dataclasses import dataclass

from selfsup.fields import AT_LEAST_1, Range, setting


@dataclass
class VizConfig:
    """Pictures of the representation during training (``selfsup viz tsne / corr RUN``)."""

    # epochs after which the backbone features of a fixed, class-balanced sample of labelled
    # training images are saved (RUN_DIR/embeddings/), the same images every time
    embed_epochs: list[int] = setting(
        factory=list, valid=AT_LEAST_1, what="epochs after which to save embeddings"
    )
    # images in that sample
    embed_limit: int = setting(1000, valid=AT_LEAST_1, what="images whose embeddings are saved")
    # epochs after which the projector's cross-correlation (VICReg: covariance) matrix of two
    # views of a fixed sample of training images is saved (RUN_DIR/correlation/)
    corr_epochs: list[int] = setting(
        factory=list,
        valid=AT_LEAST_1,
        what="epochs after which to save the correlation matrix",
    )
    # images in that sample
    corr_limit: int = setting(
        256, valid=Range(2), what="images of the correlation matrix (at least 2)"
    )
