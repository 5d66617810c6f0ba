"""The ``eval`` section of a config: which protocols measure the backbone, and their settings
(one sub-section per protocol), with the keys an earlier selfsup wrote."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selfsup.data.classes import parse_class_spec
from selfsup.errors import ConfigError
from selfsup.fields import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, TEMP, UNIT, Range, setting


@dataclass
class KnnEval:
    """``knn``: DINO's weighted kNN on frozen features."""

    k: list[int] = setting(factory=lambda: [20, 200], valid=AT_LEAST_1, what="neighbours that vote")
    temperature: float = setting(0.07, valid=POSITIVE, what=TEMP)


@dataclass
class LinearEval:
    """``linear``: L2-regularised logistic regression on frozen features (L-BFGS); the penalty
    is chosen from ``l2`` on the validation split carved from train."""

    l2: list[float] = setting(
        factory=lambda: [10.0**e for e in range(-6, 5)],
        valid=NON_NEGATIVE,
        what="probe L2 penalties to choose from",
    )
    # L-BFGS iterations per fit
    max_iter: int = setting(1000, valid=AT_LEAST_1, what="probe L-BFGS iterations")


@dataclass
class LinearAugEval:
    """``linear-aug``: a linear head on the frozen backbone with crop + flip (solo-learn /
    official eval_linear.py protocol: SGD, cosine schedule, lr x batch / 256)."""

    epochs: int = setting(30, valid=AT_LEAST_1, what="epochs")
    # more than one: chosen on val
    lrs: list[float] = setting(factory=lambda: [0.1], valid=POSITIVE, what="lrs to choose from")
    weight_decay: float = setting(0.0, valid=NON_NEGATIVE, what="weight decay")


@dataclass
class FinetuneEval:
    """``finetune``: the whole network on class-balanced label fractions, SGD + cosine; each
    (init, fraction) arm tries every lr and keeps the best on held-out training images. The
    batch size is also linear-aug's."""

    fractions: list[float] = setting(
        factory=lambda: [0.01, 0.1],
        valid=FRACTION,
        what="shares of the training labels; 1 is all of them",
    )
    epochs: int = setting(30, valid=AT_LEAST_1, what="epochs")
    lrs: list[float] = setting(
        factory=lambda: [0.01, 0.05, 0.25], valid=POSITIVE, what="lrs to choose from"
    )
    weight_decay: float = setting(5e-4, valid=NON_NEGATIVE, what="weight decay")
    batch_size: int = setting(256, valid=AT_LEAST_1, what="batch size")
    # the head's lr = this x the backbone's (VICReg: 2.7-10)
    head_lr_scale: float = setting(1.0, valid=POSITIVE, what="head lr / backbone lr")


@dataclass
class PseudoEval:
    """``pseudo-label``: a teacher (the probe on the labelled images, a classifier trained from
    scratch on them, or a supervised / joint run) labels unlabeled images; confident ones
    (>= threshold) join the labelled set; a student is fine-tuned on both, one per ratio."""

    # where the unlabeled pool comes from: fraction = the training split beyond a labelled
    # ``fraction``; unlabeled = every labelled training image kept, the pool drawn from the
    # dataset's split ``pool_split`` (STL-10's 100k ``unlabeled``)
    pool: str = setting("fraction", choices=("fraction", "unlabeled"))
    pool_split: str = "unlabeled"  # pool=unlabeled only
    # pool=fraction only
    fraction: float = setting(0.1, valid=FRACTION, what="the labelled share of the training labels")
    threshold: float = setting(0.99, valid=UNIT, what="the teacher confidence a pseudo-label needs")
    ratios: list[float] = setting(
        factory=lambda: [0.0, 0.4, 1.0, 2.0, 10.0],
        valid=NON_NEGATIVE,
        what="pseudo-labelled images per labelled image",
    )
    # pretrained (or null): the backbone's linear probe; finetuned: the backbone fine-tuned on
    # the labelled images; scratch: the same architecture from a random init fine-tuned the
    # same way; anything else: a supervised / joint run directory
    teacher: str | None = "pretrained"
    # equal: every ratio's student takes the optimizer steps of the largest one (the others
    # more epochs), so a ratio's gain is its data, not its compute; epochs: finetune.epochs
    # over each student's own set (steps grow with the ratio: the behaviour before)
    steps: str = setting("equal", choices=("equal", "epochs"))


@dataclass
class EvalConfig:
    protocols: list[str] = setting(factory=lambda: ["knn", "linear"])
    # keep only these classes of every evaluation dataset, relabelled 0..K-1 (as data.classes)
    classes: list[int] | str | None = None
    # which backbone to evaluate: auto = the method's official choice (DINO / DINO-Twins: the
    # EMA teacher, as DINO's eval_knn.py; every other method: the trained student)
    backbone: str = setting("auto", choices=("auto", "student", "teacher"))
    datasets: list[str] = setting(factory=list)  # extra eval datasets (transfer)
    # carved from the training split for hyper-parameter choice
    val_fraction: float = setting(
        0.1, valid=Range(0, 1, True, True), what="the share of training images held out"
    )
    # at most this many train images for kNN bank / probe fit
    train_limit: int | None = setting(
        None, valid=AT_LEAST_1, what="training images to evaluate with; null uses them all"
    )
    # at most this many test images (reported as n_test)
    test_limit: int | None = setting(
        None, valid=AT_LEAST_1, what="test images to report on; null uses them all"
    )
    compare_random: bool = True  # also evaluate a randomly initialised backbone
    compare_pixels: bool = True  # also kNN / linear on the flattened normalised pixels
    # online kNN every N epochs during pretraining (0: off)
    monitor_every: int = setting(
        0, valid=NON_NEGATIVE, what="epochs between online kNN checks; 0 turns it off"
    )
    # also run the kNN monitor once the training time passes each of these minutes, mid-epoch
    # if need be (a curve before the first epoch of a big split ends); [] : off
    monitor_minutes: list[float] = setting(
        factory=list,
        valid=POSITIVE,
        what="minutes of training after which the kNN monitor runs",
    )
    # images used by the online kNN monitor
    monitor_limit: int = setting(
        2000, valid=Range(2), what="images of the online kNN (a fifth queries the rest)"
    )
    # training images held out (seeded, class-stratified, never the test split) for per-epoch
    # train / validation curves: supervised, joint and fine-tuning runs log train_loss,
    # train_top1, val_loss, val_top1; SSL and joint runs val_ssl_loss (0: off, nothing held out).
    # It decides which images train, so a checkpoint resumes only with the same value
    # (selfsup.train.heldout.HELD_OUT).
    val_images: int = setting(
        0,
        valid=NON_NEGATIVE,
        what="training images held out for per-epoch validation curves; 0 turns them off",
    )
    # feature extraction batch
    batch_size: int = setting(512, valid=AT_LEAST_1, what="feature-extraction batch")
    seeds: list[int] | None = None  # evaluation seeds (subsets, training); None: [seed]
    # every trained evaluation gets at least this many optimizer steps (small labelled subsets
    # would otherwise see a handful of updates: 1% of 10k at batch 128 for 10 epochs is 10
    # steps); epochs are raised to reach it and recorded
    min_steps: int = setting(
        300, valid=NON_NEGATIVE, what="optimizer steps every trained evaluation gets at least"
    )
    # training crops
    crop_scale: list[float] = setting(factory=lambda: [0.08, 1.0], scale="e.g. [0.08, 1.0]")
    # a ViT's linear-probe feature (linear, linear-aug, the pseudo-label probe teacher): the CLS
    # tokens of its last N blocks, each after the final norm, concatenated, as DINO's
    # eval_linear.py (--n_last_blocks: 4 for ViT-Small, 1 for ViT-Base); kNN keeps the final
    # CLS token (eval_knn.py), and other backbones their pooled feature
    vit_last_blocks: int = setting(
        4, valid=AT_LEAST_1, what="last ViT blocks whose CLS tokens a probe reads"
    )
    # also the mean patch token of the last block (--avgpool_patchtokens; DINO's ViT-Base)
    vit_avgpool: bool = False
    knn: KnnEval = setting(factory=KnnEval)
    linear: LinearEval = setting(factory=LinearEval)
    linear_aug: LinearAugEval = setting(factory=LinearAugEval)
    finetune: FinetuneEval = setting(factory=FinetuneEval)
    pseudo: PseudoEval = setting(factory=PseudoEval)

    def check(self) -> None:
        """Lists a protocol needs are not empty; the class selection parses."""
        parse_class_spec(self.classes, "eval.classes")
        for key, value in (
            ("linear_aug.lrs", self.linear_aug.lrs),
            ("finetune.lrs", self.finetune.lrs),
        ):
            if not value:
                raise ConfigError(f"eval.{key}=[] is empty; give at least one lr, e.g. [0.05]")
        if not self.linear.l2:
            raise ConfigError("eval.linear.l2=[] is empty; give at least one penalty, e.g. [1e-4]")
        for protocol, key, value in (
            ("knn", "knn.k", self.knn.k),
            ("finetune", "finetune.fractions", self.finetune.fractions),
            ("pseudo-label", "pseudo.ratios", self.pseudo.ratios),
        ):
            if protocol in self.protocols and not value:
                raise ConfigError(
                    f"eval.{key}=[] is empty but eval.protocols has {protocol!r}; give at least "
                    f"one value or remove {protocol!r} from eval.protocols"
                )


def _same(value: Any) -> Any:
    return value


# keys an earlier selfsup wrote: (section, key) -> (what replaced it, how a saved run's value
# carries over; None: the setting no longer exists)
RETIRED_KEYS: dict[tuple[str, str], tuple[str, Callable[[Any], Any] | None]] = {
    ("eval", "finetune_lr"): ("eval.finetune.lrs (a list: each arm chooses)", lambda v: [v]),
    ("eval", "linear_aug_lr"): ("eval.linear_aug.lrs (a list: the best is chosen)", lambda v: [v]),
    ("eval", "linear_epochs"): ("eval.linear.l2 (the probe is L-BFGS logistic regression)", None),
    ("eval", "linear_batch_size"): ("eval.linear.l2 (the probe is full-batch L-BFGS)", None),
    ("eval", "linear_lr"): ("eval.linear.l2 (the probe is L-BFGS logistic regression)", None),
    ("eval", "linear_weight_decays"): ("eval.linear.l2 (L2 penalties to choose from)", None),
    # the flat eval keys before each protocol had its own section
    **{
        ("eval", f"{section}_{key}"): (f"eval.{section}.{key}", _same)
        for section, key in (
            ("knn", "k"),
            ("knn", "temperature"),
            ("linear", "l2"),
            ("linear", "max_iter"),
            ("linear_aug", "epochs"),
            ("linear_aug", "lrs"),
            ("linear_aug", "weight_decay"),
            ("finetune", "fractions"),
            ("finetune", "epochs"),
            ("finetune", "lrs"),
            ("finetune", "weight_decay"),
            ("finetune", "batch_size"),
            ("finetune", "head_lr_scale"),
            ("pseudo", "fraction"),
            ("pseudo", "threshold"),
            ("pseudo", "ratios"),
            ("pseudo", "teacher"),
        )
    },
}
