"""Per-epoch evaluation on held-out training images: the curves that show over-fitting.

With ``eval.val_images=N`` a run holds out N images of its *training* split (seeded,
class-stratified; the test split is never read) and trains on the rest. After every epoch:

- a run with a linear classifier (supervised, joint, a fine-tuned or linear-aug evaluation)
  logs ``train_loss`` / ``train_top1`` (a fixed, class-stratified sample of as many labelled
  training images) and ``val_loss`` / ``val_top1`` (the held-out images): cross-entropy and
  top-1 of the classifier's logits on the evaluation view, in eval mode. Both sides are
  measured the same way, so their gap is the generalisation gap; the per-step training loss
  (augmented views, train-mode batch norm) stays in the step records;
- a self-supervised run (and a joint run's SSL part) logs ``val_ssl_loss``: the method's own
  loss on the held-out images, views drawn from a fixed seed (the same views every epoch).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from selfsup.data.array import ImageArray, labelled
from selfsup.data.sampling import stratified_holdout
from selfsup.data.views import make_views
from selfsup.methods.base import Method
from selfsup.methods.joint import Joint
from selfsup.precision import amp_dtype, autocast_for

Scores = Callable[[ImageArray], torch.Tensor]  # images -> logits (M, K)
HOLDOUT_SEED = 5  # offset of the carve's seed (data.limit uses the seed, the kNN monitor +2)
VIEW_SEED = 9_973  # offset of the held-out views' seed
# eval.val_images decides which training images are held out, so which images train: a run
# resumes only with the same value (train.loop.architecture)
HELD_OUT = ("eval", "val_images")


def carve_validation_split(
    data: ImageArray, n: int, seed: int
) -> tuple[ImageArray, ImageArray | None]:
    """(training images, held-out images): ``n`` images of ``data`` held out, class-stratified
    (:func:`~selfsup.data.sampling.stratified_holdout`), the same ones for a given seed;
    ``(data, None)`` when ``n`` is 0."""
    if n == 0:
        return data, None
    kept, held = stratified_holdout(data.labels, n, seed + HOLDOUT_SEED)
    return data.subset(kept), data.subset(held)


def stratified_sample(data: ImageArray, n: int, seed: int) -> ImageArray:
    """At most ``n`` labelled images of ``data``, class-stratified and fixed by ``seed``."""
    data = labelled(data)
    if n >= len(data):
        return data
    return data.subset(stratified_holdout(data.labels, n, seed)[1])


def curve_samples(
    train: ImageArray, val: ImageArray, n: int, seed: int
) -> tuple[ImageArray, ImageArray]:
    """(training sample, validation sample) of the classification curves: at most ``n``
    labelled held-out images and as many labelled training images, both class-stratified."""
    val = stratified_sample(val, n, seed + HOLDOUT_SEED)
    return stratified_sample(train, len(val), seed + HOLDOUT_SEED + 1), val


def classification_curves(scores: Scores, train: ImageArray, val: ImageArray) -> dict[str, float]:
    """``train_loss``, ``train_top1``, ``val_loss``, ``val_top1``: mean cross-entropy and top-1
    of ``scores`` (a classifier's logits) on labelled ``train`` and ``val`` images."""
    out = {}
    for name, data in (("train", train), ("val", val)):
        logits = scores(data).float()
        target = data.labels.to(logits.device)
        out[f"{name}_loss"] = float(F.cross_entropy(logits, target))
        out[f"{name}_top1"] = float((logits.argmax(1) == target).float().mean())
    return out


LOSS_ALARM = 10.0  # a held-out cross-entropy this many times chance's ln(K) is flagged


def loss_warning(val_loss: float, num_classes: int) -> str | None:
    """A warning when the held-out cross-entropy is NaN / inf or above ``LOSS_ALARM`` x
    ln(num_classes) (the loss of a uniform guess): the classifier is diverging on images it
    does not train on (a joint run once logged val_loss 5.7e8 without a word)."""
    chance = math.log(max(num_classes, 2))
    if math.isfinite(val_loss) and val_loss <= LOSS_ALARM * chance:
        return None
    return (
        f"the held-out loss is {val_loss:.3g}, {LOSS_ALARM:g}x above a uniform guess's "
        f"{chance:.2f} or more: the classifier is diverging. Lower train.lr or set "
        "train.grad_clip (e.g. 1.0)"
    )


@torch.no_grad()
def heldout_ssl_loss(
    method: Method,
    images: torch.Tensor,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
) -> float:
    """The mean SSL loss of ``method`` on uint8 ``images`` (N, C, H, W): batches of
    ``batch_size`` (the training batch: contrastive and batch-statistics losses depend on it;
    the last incomplete batch is dropped as in training, one batch of all N when fewer), views
    from a generator seeded by ``seed``. ``method`` is left exactly as it was.

    Why a deep copy in train mode under no_grad: training-mode batch norm normalises with the
    batch's statistics as the training loss does, so this loss and the training loss measure
    the same quantity (eval-mode running statistics would shift it). A forward pass has side
    effects beyond batch-norm running statistics: MoCo / ISD keep the teacher keys for the next
    step's enqueue, DINO keeps the teacher output for its centre update, DINO-Twins calibrates
    its loss weight on its first call. Running a throw-away copy absorbs all of them, for any
    method, where saving and restoring buffers would miss the Python-side state (the pending
    keys would enter the queue at the next training step). It costs one copy of the weights
    while it runs. The global RNG is forked so that dropout / drop-path in train mode does not
    move the training run's random stream (resume stays exact)."""
    n = len(images)
    batch = min(batch_size, n)
    net = copy.deepcopy(method.ssl if isinstance(method, Joint) else method).train()
    gen = torch.Generator(device=device).manual_seed(seed)
    autocast = autocast_for(device, amp_dtype(precision, device))
    total = torch.zeros((), device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for start in range(0, n - batch + 1, batch):
            x = images[start : start + batch].to(device)
            views = make_views(x, net.view_specs, gen)
            if channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            with autocast:
                total += net(views).loss.float()
    return float(total) / (n // batch)
