"""Typed configs: dataclasses saved and loaded as YAML, overridden with dotted keys.

A config is built from (1) the dataclass defaults, (2) a YAML file, (3) ``key=value`` overrides
(``train.epochs=5``), in that order. The ``method`` section's type depends on ``method.name``
(each method has its own dataclass with its paper's defaults), so the name is resolved first.
Every unknown key and every value of the wrong type is a :class:`ConfigError` that names the
valid keys, so a typo never silently trains the wrong thing.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from selfsup.atomic import write_text_atomic
from selfsup.data.classes import parse_class_spec
from selfsup.errors import ConfigError
from selfsup.heads import parse_mlp_spec
from selfsup.registry import Registry
from selfsup.yaml_file import read_yaml_mapping

# method name -> its config class; filled by selfsup.methods.register_method (imported with the
# package), the one place a method is registered
METHOD_CONFIGS: Registry[type] = Registry("method")


@dataclass
class MethodConfig:
    """Fields every method has; each method subclasses it with its own hyper-parameters."""

    name: str = "vicreg"


@dataclass
class VICRegConfig(MethodConfig):
    """VICReg (Bardes et al., ICLR 2022), defaults of facebookresearch/vicreg main_vicreg.py."""

    name: str = "vicreg"
    projector: str = "8192-8192-8192"  # hidden-...-output widths after the backbone features
    sim_weight: float = 25.0  # --sim-coeff
    var_weight: float = 25.0  # --std-coeff
    cov_weight: float = 1.0  # --cov-coeff


@dataclass
class BarlowTwinsConfig(MethodConfig):
    """Barlow Twins (Zbontar et al., ICML 2021): defaults of facebookresearch/barlowtwins."""

    name: str = "barlow_twins"
    projector: str = "8192-8192-8192"  # --projector; every Linear bias-free
    lambd: float = 0.0051  # --lambd, weight of the off-diagonal term
    # the loss is multiplied by this: solo-learn's scale_loss (0.1 in its CIFAR recipe); the
    # official code keeps 1 and gives biases a 0.024x lr instead (train.bias_lr_scale)
    scale_loss: float = 1.0


@dataclass
class SimCLRConfig(MethodConfig):
    """SimCLR (Chen et al., ICML 2020): MLP projector (Linear-BN-ReLU-Linear, SimCLR v2's BN) and
    NT-Xent. Temperature 0.2 is solo-learn's CIFAR value (the paper's ImageNet best is 0.1)."""

    name: str = "simclr"
    projector: str = "2048-128"
    temperature: float = 0.2


@dataclass
class MoCoConfig(MethodConfig):
    """MoCo v2 (Chen et al. 2020; facebookresearch/moco main_moco.py with --mlp --cos): key
    encoder as EMA of the query encoder, MLP head (Linear-ReLU-Linear, no BN), queue of keys."""

    name: str = "moco"
    projector: str = "2048-128"  # --mlp head: hidden 2048, --moco-dim 128
    queue_size: int = 65536  # --moco-k (ImageNet); 4096 for CIFAR-size data
    momentum: float = 0.999  # --moco-m; the EMA momentum, raised to momentum_final by cosine
    momentum_final: float = 0.999  # = momentum: the official constant momentum
    temperature: float = 0.2  # --moco-t
    symmetric: bool = False  # both views as query (MoCo's CIFAR demo); official v2 is not
    # shuffle-BN (parts/shuffle_bn.py): the key batch shuffled, BN per 1/bn_splits of the batch
    # (facebookresearch/moco colab/moco_cifar10_demo.ipynb: --bn-splits 8)
    shuffle_bn: bool = True
    bn_splits: int = 8


@dataclass
class DINOConfig(MethodConfig):
    """DINO (Caron et al., ICCV 2021), defaults of facebookresearch/dino main_dino.py (the
    teacher temperature warm-up 0.04 -> 0.07 is the README's advice for longer runs)."""

    name: str = "dino"
    out_dim: int = 65536  # --out_dim; 4096 for CIFAR-size data (solo-learn)
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    norm_last_layer: bool = True  # --norm_last_layer: weight-normalised last layer, g fixed to 1
    student_temp: float = 0.1
    teacher_temp: float = 0.07  # --teacher_temp after the warm-up
    warmup_teacher_temp: float = 0.04  # --warmup_teacher_temp
    warmup_teacher_temp_epochs: float = 30.0  # --warmup_teacher_temp_epochs
    momentum_teacher: float = 0.996  # --momentum_teacher, cosine to 1 over training
    center_momentum: float = 0.9
    freeze_last_layer: float = 1.0  # --freeze_last_layer: epochs with a frozen last layer
    local_crops: int = 6  # --local_crops_number (the paper's 2 x 224 + 6 x 96 setting)
    local_size: int | None = None  # local crop side; None: about half the global size (x4)
    # --local_crops_scale; None: (0.05, 0.4) for ViTs, (0.05, 0.14) for ResNets (see recipes)
    local_scale: list[float] | None = None
    center: bool = True  # False: no centring of the teacher output (collapse ablation)
    sharpen: bool = True  # False: teacher temperature = student temperature (ablation)


@dataclass
class DINOTwinsConfig(DINOConfig):
    """DINO plus a Barlow Twins term on a separate projector of the student backbone features,
    averaged over every pair of distinct student crops. selfsup's own variant: no paper
    defines it; the nearest published source (Podsiadly & Lay, "DinoTwins", arXiv:2508.17509)
    is not followed. The separate 2048-2048-2048 projector, Barlow Twins over all crop pairs
    (local-local included) and the weight set at step 0 to half the DINO term are our choices."""

    name: str = "dino_twins"
    bt_projector: str = "2048-2048-2048"
    bt_lambd: float = 0.0051
    bt_weight: float | None = None  # None: set at the first step so the term is half of DINO's


@dataclass
class ISDConfig(MethodConfig):
    """ISD (Tejankar et al., ICCV 2021) as UMBCvision/ISD train_isd_plus.py runs it (its README's
    ResNet-50 command, with ``--weak_strong``): an MLP projector on student and teacher, an MLP
    predictor on the student only, two temperatures; defaults are that file's. The older
    train_isd.py (the README's ResNet-18 command) is not followed: it has no projector, a
    feature-width Linear-BN-ReLU-Linear predictor, one ``--temp`` 0.02 for both sides, momentum
    0.999 and the same strong augmentation for both views."""

    name: str = "isd"
    # auto: get_mlp(F, 2F, F // 4) = Linear-BN-ReLU-Linear, train_isd_plus.py's encoder fc (so the
    # teacher, an EMA of the student encoder, has it too)
    projector: str = "auto"
    predictor: str = "auto"  # auto: get_mlp(F // 4, 2F, F // 4), train_isd_plus.py's predict_q
    queue_size: int = 128000  # --queue_size (our CIFAR / STL-10 configs use 16384)
    momentum: float = 0.99  # --momentum of the EMA teacher
    student_temp: float = 0.1  # --temp_s
    teacher_temp: float = 0.01  # --temp_t
    # shuffle-BN as MoCo's (parts/shuffle_bn.py); train_isd_plus.py shuffles the teacher's
    # input (get_shuffle_ids) with BN per GPU
    shuffle_bn: bool = True
    bn_splits: int = 8


@dataclass
class SupervisedConfig(MethodConfig):
    """The supervised baseline: the same backbone trained from scratch with cross-entropy on a
    class-balanced ``label_fraction`` of the labelled training images (``selfsup supervised``)."""

    name: str = "supervised"
    label_fraction: float = 1.0
    num_classes: int = 0  # 0: from the data (written into the run's config.yaml)


@dataclass
class JointConfig:
    """Joint SSL + supervised training (``selfsup joint``): loss = cross-entropy of a linear head
    on the labelled images of each batch + ``ssl_weight`` x the method's SSL loss on all."""

    enabled: bool = False
    label_fraction: float = 0.1  # class-balanced share of training images that keep labels
    ssl_weight: float = 1.0
    num_classes: int = 0  # 0: from the data (written into the run's config.yaml)


@dataclass
class BackboneConfig:
    name: str = "resnet18"  # resnet18 | resnet34 | resnet50 | small_resnet | vit_tiny_p4
    stem: str = "auto"  # auto (small stem for <= 64 px) | small | imagenet
    depths: list[int] = field(default_factory=lambda: [2, 1, 1, 1])  # small_resnet only
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])  # small_resnet only
    # ResNets: the last BN of each residual block starts at 0 (each block starts as the
    # identity), as facebookresearch/vicreg main_vicreg.py and barlowtwins main.py build theirs
    # (zero_init_residual=True); torchvision's and DINO's default is False
    zero_init_residual: bool = False
    # start from these weights: a .safetensors file (`selfsup export`), a plain state dict, a
    # selfsup checkpoint or run directory; None: random init
    weights: str | None = None
    # dropout before the classifier head of the supervised baseline and of the fine-tuned
    # evaluations (finetune, pseudo-label students and scratch teacher); 0 turns it off
    dropout: float = 0.0


@dataclass
class DataConfig:
    dataset: str = (
        "synthetic"  # cifar10 | cifar100 | stl10 | fashion-mnist | imagefolder:PATH | ...
    )
    split: str = "train"  # the split pretraining reads (stl10: unlabeled, train+unlabeled)
    root: str | None = None  # data root; None: $SELFSUP_DATA or ~/.cache/selfsup
    download: bool = False  # allow torchvision to download a missing dataset
    limit: int | None = None  # use at most this many training images (a seeded random subset)
    image_size: int | None = None  # decode size for imagefolder / synthetic
    mean: list[float] | None = None  # per-channel normalisation; None: measured on the data
    std: list[float] | None = None
    on_bad_image: str = "skip"  # skip (listed in the cache's bad-image report) | fail
    # keep only these classes, relabelled 0..K-1 in this order (names kept): a list of class
    # indices or ranges such as "0-49"; null keeps every class (see selfsup.data.classes)
    classes: list[int] | str | None = None


@dataclass
class ViewsConfig:
    size: int | None = None  # output side of the (global) views; None: the images' own size
    crop_scale: list[float] | None = None  # RandomResizedCrop scale; None: the method's own
    compile: bool = False  # torch.compile the view ops (2-core CPU: no faster than eager)


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "lars"  # lars | adamw | sgd
    lr: float = 0.2  # base lr; the lr used is lr * batch_size / 256 (the official VICReg rule)
    weight_decay: float = 1e-6
    weight_decay_end: float | None = None  # cosine from weight_decay to this (DINO); None: fixed
    momentum: float = 0.9  # lars / sgd
    # LARS trust ratio: eta 0.001 unclipped is facebookresearch/vicreg and barlowtwins (a step of
    # ~lr * 0.1% of each tensor's norm); solo-learn's recipes use eta 0.02 with lars_clip=true
    # (a step of ~min(2% of the norm, lr * the gradient)). See train/optim.py.
    lars_eta: float = 0.001
    lars_clip: bool = False
    # lr of biases and norm parameters relative to the weights' (official Barlow Twins:
    # --learning-rate-biases 0.0048 / --learning-rate-weights 0.2 = 0.024)
    bias_lr_scale: float = 1.0
    warmup_epochs: float = 10.0  # capped at half the run (parts/schedules.py warmup_steps)
    # at least this many warm-up steps whatever the data size (an epoch of 2,048 images is 8
    # steps at batch 256); measured in benchmarks/RESULTS.md "Recipes at any size"
    warmup_min_steps: int = 100
    final_lr_ratio: float = 0.001  # cosine ends at lr * final_lr_ratio
    grad_clip: float | None = None  # max global grad norm; None: off
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto: bf16 where native (CUDA >= sm80, CPU with AVX-512 BF16)
    channels_last: bool = True
    compile: bool = False  # torch.compile the method
    log_every: int = 10  # steps between metric flushes (one host sync per flush)
    checkpoint_every: int = 0  # also checkpoint every N steps mid-epoch (0: at epoch ends only)
    skip_nonfinite: int = 0  # skip up to N steps whose loss is NaN / inf (logged); 0: stop at once
    progress: bool = True  # show a progress bar
    # also write TensorBoard event files (RUN_DIR/tensorboard; needs the tensorboard package)
    tensorboard: bool = False


@dataclass
class KnnEval:
    """``knn``: DINO's weighted kNN on frozen features."""

    k: list[int] = field(default_factory=lambda: [20, 200])
    temperature: float = 0.07


@dataclass
class LinearEval:
    """``linear``: L2-regularised logistic regression on frozen features (L-BFGS); the penalty
    is chosen from ``l2`` on the validation split carved from train."""

    l2: list[float] = field(default_factory=lambda: [10.0**e for e in range(-6, 5)])
    max_iter: int = 1000  # L-BFGS iterations per fit


@dataclass
class LinearAugEval:
    """``linear-aug``: a linear head on the frozen backbone with crop + flip (solo-learn /
    official eval_linear.py protocol: SGD, cosine schedule, lr x batch / 256)."""

    epochs: int = 30
    lrs: list[float] = field(default_factory=lambda: [0.1])  # more than one: chosen on val
    weight_decay: float = 0.0


@dataclass
class FinetuneEval:
    """``finetune``: the whole network on class-balanced label fractions, SGD + cosine; each
    (init, fraction) arm tries every lr and keeps the best on held-out training images. The
    batch size is also linear-aug's."""

    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1])
    epochs: int = 30
    lrs: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.25])
    weight_decay: float = 5e-4
    batch_size: int = 256
    head_lr_scale: float = 1.0  # the head's lr = this x the backbone's (VICReg: 2.7-10)


@dataclass
class PseudoEval:
    """``pseudo-label``: a teacher (the probe on the labelled images, a classifier trained from
    scratch on them, or a supervised / joint run) labels unlabeled images; confident ones
    (>= threshold) join the labelled set; a student is fine-tuned on both, one per ratio."""

    # where the unlabeled pool comes from: fraction = the training split beyond a labelled
    # ``fraction``; unlabeled = every labelled training image kept, the pool drawn from the
    # dataset's split ``pool_split`` (STL-10's 100k ``unlabeled``)
    pool: str = "fraction"
    pool_split: str = "unlabeled"  # pool=unlabeled only
    fraction: float = 0.1  # pool=fraction only
    threshold: float = 0.99
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.4, 1.0, 2.0, 10.0])
    # pretrained (or null): the backbone's linear probe; finetuned: the backbone fine-tuned on
    # the labelled images; scratch: the same architecture from a random init fine-tuned the
    # same way; anything else: a supervised / joint run directory
    teacher: str | None = "pretrained"
    # equal: every ratio's student takes the optimizer steps of the largest one (the others
    # more epochs), so a ratio's gain is its data, not its compute; epochs: finetune.epochs
    # over each student's own set (steps grow with the ratio: the behaviour before)
    steps: str = "equal"


@dataclass
class EvalConfig:
    protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])
    # keep only these classes of every evaluation dataset, relabelled 0..K-1 (as data.classes)
    classes: list[int] | str | None = None
    # which backbone to evaluate: auto = the method's official choice (DINO / DINO-Twins: the
    # EMA teacher, as DINO's eval_knn.py; every other method: the trained student)
    backbone: str = "auto"  # auto | student | teacher
    datasets: list[str] = field(default_factory=list)  # extra eval datasets (transfer)
    val_fraction: float = 0.1  # carved from the training split for hyper-parameter choice
    train_limit: int | None = None  # at most this many train images for kNN bank / probe fit
    test_limit: int | None = None  # at most this many test images (reported as n_test)
    compare_random: bool = True  # also evaluate a randomly initialised backbone
    compare_pixels: bool = True  # also kNN / linear on the flattened normalised pixels
    monitor_every: int = 0  # online kNN every N epochs during pretraining (0: off)
    # also run the kNN monitor once the training time passes each of these minutes, mid-epoch
    # if need be (a curve before the first epoch of a big split ends); [] : off
    monitor_minutes: list[float] = field(default_factory=list)
    monitor_limit: int = 2000  # images used by the online kNN monitor
    # training images held out (seeded, class-stratified, never the test split) for per-epoch
    # train / validation curves: supervised, joint and fine-tuning runs log train_loss,
    # train_top1, val_loss, val_top1; SSL and joint runs val_ssl_loss (0: off, nothing held out)
    val_images: int = 0
    batch_size: int = 512  # feature extraction batch
    seeds: list[int] | None = None  # evaluation seeds (subsets, training); None: [seed]
    min_steps: int = 300  # every trained evaluation gets at least this many optimizer steps
    # (small labelled subsets would otherwise see a handful of updates: 1% of 10k at batch 128
    # for 10 epochs is 10 steps); epochs are raised to reach it and recorded
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # training crops
    knn: KnnEval = field(default_factory=KnnEval)
    linear: LinearEval = field(default_factory=LinearEval)
    linear_aug: LinearAugEval = field(default_factory=LinearAugEval)
    finetune: FinetuneEval = field(default_factory=FinetuneEval)
    pseudo: PseudoEval = field(default_factory=PseudoEval)


@dataclass
class VizConfig:
    """Pictures of the representation during training (``selfsup viz tsne / corr RUN``)."""

    # epochs after which the backbone features of a fixed, class-balanced sample of labelled
    # training images are saved (RUN_DIR/embeddings/), the same images every time
    embed_epochs: list[int] = field(default_factory=list)
    embed_limit: int = 1000  # images in that sample
    # epochs after which the projector's cross-correlation (VICReg: covariance) matrix of two
    # views of a fixed sample of training images is saved (RUN_DIR/correlation/)
    corr_epochs: list[int] = field(default_factory=list)
    corr_limit: int = 256  # images in that sample


@dataclass
class Config:
    method: MethodConfig = field(default_factory=VICRegConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    viz: VizConfig = field(default_factory=VizConfig)
    seed: int = 0


# --- building a typed config from plain data ------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_value(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond the float range
                raise ConfigError(f"{key}: {value} is too large for a number") from None
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp} for {key}")


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


def migrate_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config (``config.yaml`` of an earlier selfsup) in today's keys: retired
    keys carried over where they still mean something, dropped where they do not. A config a
    user writes is not migrated: its retired keys are refused with the new key's name."""
    out = copy.deepcopy(data)
    for (section, key), (new, carry) in RETIRED_KEYS.items():
        part = out.get(section)
        if isinstance(part, dict) and key in part:
            value = part.pop(key)
            if carry is not None:  # "eval.knn.k (...)" -> out["eval"]["knn"]["k"]
                *path, last = new.split()[0].split(".")[1:]
                node = part
                for name in path:
                    node = node.setdefault(name, {})
                node.setdefault(last, carry(value))
    return out


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = sorted((k for k in data if k not in types_), key=str)  # keys: any YAML scalar
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        retired = RETIRED_KEYS.get((prefix.rstrip("."), unknown[0]))
        if retired:
            raise ConfigError(f"{prefix}{unknown[0]} was replaced by {retired[0]}")
        raise ConfigError(
            f"unknown config key {f'{prefix}{unknown[0]}'!r}; valid keys at {where}: "
            + ", ".join(prefix + k for k in types_)
        )
    kwargs = {}
    for name, tp in types_.items():
        if name not in data:
            continue
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], key + ".")
        else:
            kwargs[name] = _check_value(data[name], tp, key)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested plain data (as read from YAML)."""
    if not isinstance(data or {}, dict):
        raise ConfigError(f"config: expected a mapping of keys to values, got {data!r:.80}")
    data = dict(data or {})
    if not isinstance(data.get("method", {}), dict):
        raise ConfigError("method: expected a mapping with at least 'name'")
    method = dict(data.pop("method", {}) or {})
    name = method.get("name", MethodConfig.name)
    if not isinstance(name, str):  # a YAML list or mapping cannot even be looked up
        raise ConfigError(f"method.name: unknown method {name!r}; give one name, e.g. vicreg")
    method_cls = METHOD_CONFIGS.get(name)
    cfg = _build(Config, data, "")
    cfg.method = _build(method_cls, method, "method.")
    check_choices(cfg)
    check_ranges(cfg)
    return cfg


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("train", "optimizer"): ("lars", "adamw", "sgd"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "precision"): ("auto", "bf16", "fp32"),
    ("backbone", "stem"): ("auto", "small", "imagenet"),
    ("data", "on_bad_image"): ("skip", "fail"),
    ("eval", "backbone"): ("auto", "student", "teacher"),
    ("eval.pseudo", "pool"): ("fraction", "unlabeled"),
    ("eval.pseudo", "steps"): ("equal", "epochs"),
}


def check_choice(section: str, key: str, value: Any) -> None:
    """``value`` must be one of ``CHOICES[(section, key)]``, the one list of a key's valid
    choices that every check reads; else a ConfigError naming them."""
    valid = CHOICES[(section, key)]
    if value not in valid:
        raise ConfigError(
            f"{section}.{key}={value!r} is not valid; valid choices: {', '.join(valid)}"
        )


def check_choices(cfg: Config) -> None:
    """Enumerated values must be one of their choices (names in registries are checked where
    they are looked up)."""
    for section, key in CHOICES:
        check_choice(section, key, _lookup(cfg, f"{section}.{key}")[1])


@dataclass(frozen=True)
class Range:
    """An interval of valid numbers; ``str()`` reads like "> 0", ">= 1", "in (0, 1]"."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):  # an int is finite
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:.12g}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"in {left}{self.lo:.12g}, {self.hi:.12g}{right}"


POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)
UNIT = Range(0, 1)  # [0, 1]
FRACTION = Range(0, 1, lo_open=True)  # (0, 1]
EMA = UNIT  # an EMA momentum: 0 copies the new value, 1 never changes
_TEMP = "a softmax temperature; small values sharpen"
MAX_SIDE = 4096
"""The largest image or view side: a uint8 image of 4096 x 4096 is 48 MiB and its float view
192 MiB, so a batch of 64 views is 12 GiB before the network sees it (4x SAM's 1024-px input,
18x ImageNet's 224). Beyond it nothing trains, and 100000 used to be a traceback after minutes
of decoding (30 GB per image)."""
SIDE = Range(1, MAX_SIDE)
_SIDE = f"at most {MAX_SIDE} (selfsup.config.MAX_SIDE: a batch of views would not fit)"

# key -> (valid range, what the value is / how to fix it). A list value is checked entry by
# entry, a null (optional) value not at all; a key its section lacks (a method's own
# hyper-parameter under another method) is skipped.
RANGES: dict[str, tuple[Range, str]] = {
    "seed": (Range(0, 2**32 - 1), "a random seed"),
    "backbone.depths": (AT_LEAST_1, "blocks per stage of small_resnet"),
    "backbone.widths": (AT_LEAST_1, "channels per stage of small_resnet"),
    "backbone.dropout": (Range(0, 1, hi_open=True), "the share of features dropped; 0 is off"),
    "data.limit": (AT_LEAST_1, "images to train on; null uses them all"),
    "data.image_size": (SIDE, f"decoded side in pixels; null: the dataset's own; {_SIDE}"),
    "data.std": (POSITIVE, "per-channel std; null measures it on the data"),
    "views.size": (SIDE, f"view side in pixels; null: the images' own size; {_SIDE}"),
    "train.epochs": (AT_LEAST_1, "train for at least one epoch"),
    "train.batch_size": (AT_LEAST_1, "the global batch (images per step)"),
    "train.lr": (
        POSITIVE,
        "the base lr, used as lr * batch_size / 256; an lr of 0 trains nothing, and "
        "eval.compare_random already evaluates an untrained backbone",
    ),
    "train.weight_decay": (NON_NEGATIVE, "0 turns weight decay off"),
    "train.weight_decay_end": (NON_NEGATIVE, "null keeps train.weight_decay fixed"),
    "train.momentum": (Range(0, 1, hi_open=True), "SGD / LARS momentum, e.g. 0.9"),
    "train.lars_eta": (POSITIVE, "the LARS trust coefficient, e.g. 0.001 (0.02 with lars_clip)"),
    "train.bias_lr_scale": (NON_NEGATIVE, "lr of biases and norms relative to the weights'"),
    "train.warmup_epochs": (NON_NEGATIVE, "0 turns warm-up off; capped at half the run"),
    "method.bn_splits": (AT_LEAST_1, "simulated GPUs for shuffle-BN, e.g. 8; 1: whole-batch BN"),
    "train.warmup_min_steps": (NON_NEGATIVE, "steps; the shortest warm-up at any data size"),
    "train.final_lr_ratio": (UNIT, "the cosine ends at lr * final_lr_ratio"),
    "train.grad_clip": (POSITIVE, "a max gradient norm, e.g. 1.0; null turns it off"),
    "train.log_every": (AT_LEAST_1, "steps between metric flushes"),
    "train.checkpoint_every": (NON_NEGATIVE, "steps; 0 checkpoints at epoch ends only"),
    "train.skip_nonfinite": (NON_NEGATIVE, "steps; 0 stops at the first NaN / inf loss"),
    "eval.knn.k": (AT_LEAST_1, "neighbours that vote"),
    "eval.knn.temperature": (POSITIVE, _TEMP),
    "eval.linear.l2": (NON_NEGATIVE, "probe L2 penalties to choose from"),
    "eval.linear.max_iter": (AT_LEAST_1, "probe L-BFGS iterations"),
    "viz.embed_epochs": (AT_LEAST_1, "epochs after which to save embeddings"),
    "viz.embed_limit": (AT_LEAST_1, "images whose embeddings are saved"),
    "viz.corr_epochs": (AT_LEAST_1, "epochs after which to save the correlation matrix"),
    "viz.corr_limit": (Range(2), "images of the correlation matrix (at least 2)"),
    "eval.val_fraction": (Range(0, 1, True, True), "the share of training images held out"),
    "eval.train_limit": (AT_LEAST_1, "training images to evaluate with; null uses them all"),
    "eval.test_limit": (AT_LEAST_1, "test images to report on; null uses them all"),
    "eval.monitor_every": (NON_NEGATIVE, "epochs between online kNN checks; 0 turns it off"),
    "eval.monitor_limit": (Range(2), "images of the online kNN (a fifth queries the rest)"),
    "eval.monitor_minutes": (POSITIVE, "minutes of training after which the kNN monitor runs"),
    "eval.val_images": (
        NON_NEGATIVE,
        "training images held out for per-epoch validation curves; 0 turns them off",
    ),
    "eval.batch_size": (AT_LEAST_1, "feature-extraction batch"),
    "eval.min_steps": (NON_NEGATIVE, "optimizer steps every trained evaluation gets at least"),
    "eval.linear_aug.epochs": (AT_LEAST_1, "epochs"),
    "eval.linear_aug.lrs": (POSITIVE, "lrs to choose from"),
    "eval.linear_aug.weight_decay": (NON_NEGATIVE, "weight decay"),
    "eval.finetune.fractions": (FRACTION, "shares of the training labels; 1 is all of them"),
    "eval.finetune.epochs": (AT_LEAST_1, "epochs"),
    "eval.finetune.lrs": (POSITIVE, "lrs to choose from"),
    "eval.finetune.weight_decay": (NON_NEGATIVE, "weight decay"),
    "eval.finetune.batch_size": (AT_LEAST_1, "batch size"),
    "eval.finetune.head_lr_scale": (POSITIVE, "head lr / backbone lr"),
    "eval.pseudo.fraction": (FRACTION, "the labelled share of the training labels"),
    "eval.pseudo.threshold": (UNIT, "the teacher confidence a pseudo-label needs"),
    "eval.pseudo.ratios": (NON_NEGATIVE, "pseudo-labelled images per labelled image"),
    "joint.label_fraction": (FRACTION, "the share of training images that keep labels"),
    "joint.ssl_weight": (NON_NEGATIVE, "weight of the SSL loss"),
    "joint.num_classes": (NON_NEGATIVE, "0 takes it from the data"),
    "method.label_fraction": (FRACTION, "the share of training labels; 1 is all of them"),
    "method.num_classes": (NON_NEGATIVE, "0 takes it from the data"),
    "method.sim_weight": (NON_NEGATIVE, "a loss weight"),
    "method.var_weight": (NON_NEGATIVE, "a loss weight"),
    "method.cov_weight": (NON_NEGATIVE, "a loss weight"),
    "method.lambd": (NON_NEGATIVE, "the off-diagonal weight"),
    "method.scale_loss": (POSITIVE, "the loss multiplier"),
    "method.temperature": (POSITIVE, _TEMP),
    "method.student_temp": (POSITIVE, _TEMP),
    "method.teacher_temp": (POSITIVE, _TEMP),
    "method.warmup_teacher_temp": (POSITIVE, _TEMP),
    "method.warmup_teacher_temp_epochs": (NON_NEGATIVE, "epochs; 0 turns the warm-up off"),
    "method.momentum": (EMA, "an EMA momentum (0 copies the student, 1 freezes the teacher)"),
    "method.momentum_final": (EMA, "an EMA momentum"),
    "method.momentum_teacher": (EMA, "an EMA momentum"),
    "method.center_momentum": (EMA, "an EMA momentum"),
    "method.queue_size": (AT_LEAST_1, "keys in the queue, e.g. 4096 for CIFAR-size data"),
    "method.out_dim": (AT_LEAST_1, "width"),
    "method.hidden_dim": (AT_LEAST_1, "width"),
    "method.bottleneck_dim": (AT_LEAST_1, "width"),
    "method.local_crops": (NON_NEGATIVE, "local crops per image; 0 turns multi-crop off"),
    "method.local_size": (SIDE, "local crop side; null: about half the global size"),
    "method.freeze_last_layer": (NON_NEGATIVE, "epochs"),
    "method.bt_lambd": (NON_NEGATIVE, "the off-diagonal weight"),
    "method.bt_weight": (NON_NEGATIVE, "null sets it at the first step"),
}
# crop scales: [lo, hi] shares of the image area, 0 < lo <= hi <= 1
SCALES = {
    "views.crop_scale": "null takes the method's own",
    "eval.crop_scale": "e.g. [0.08, 1.0]",
    "method.local_scale": "null takes the recipe's (0.05, 0.14) on a ResNet",
}
# MLP specs: widths joined by '-', parsed by selfsup.heads.parse_mlp_spec ("auto": ISD only)
MLP_SPECS = ("method.projector", "method.predictor", "method.bt_projector")


def _lookup(cfg: Config, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not hasattr(node, part):
            return False, None
        node = getattr(node, part)
    return True, node


def check_ranges(cfg: Config) -> None:
    """Every number in its valid range (finite, positive where it must be, a fraction in
    (0, 1], ...), crop scales ordered inside (0, 1], MLP specs parseable, lists a protocol
    needs non-empty: a bad value fails here, before any data is read or anything trained,
    with a message that names the key, the value and what it may be."""
    for key, (valid, what) in RANGES.items():
        found, value = _lookup(cfg, key)
        if not found or value is None:
            continue
        for i, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if v not in valid:
                name = key if i is None else f"{key}[{i}]"
                raise ConfigError(
                    f"{name}={v!r} is out of range ({what}); set it to a value {valid}"
                )
    for key, what in SCALES.items():
        found, value = _lookup(cfg, key)
        if not found or value is None:
            continue
        if len(value) != 2 or not 0 < value[0] <= value[1] <= 1:
            raise ConfigError(
                f"{key}={value!r} is not a crop scale ({what}): set it to two numbers [lo, hi] "
                "with 0 < lo <= hi <= 1, shares of the image area"
            )
    for key in MLP_SPECS:
        found, value = _lookup(cfg, key)
        if not found or (value == "auto" and cfg.method.name == "isd"):
            continue
        try:
            parse_mlp_spec(value)
        except ConfigError as err:
            raise ConfigError(f"{key}={value!r} is not valid: {err}") from None
    b = cfg.backbone
    if b.name == "small_resnet" and (len(b.depths) != len(b.widths) or not b.depths):
        raise ConfigError(
            f"backbone.depths={b.depths} and backbone.widths={b.widths} differ in length or are "
            "empty: small_resnet takes one depth and one width per stage; set both, e.g. "
            "backbone.depths=[2,1,1,1] backbone.widths=[64,128,256,512]"
        )
    e = cfg.eval
    parse_class_spec(cfg.data.classes, "data.classes")
    parse_class_spec(e.classes, "eval.classes")
    for key in ("linear_aug.lrs", "finetune.lrs"):
        if not _lookup(cfg, f"eval.{key}")[1]:
            raise ConfigError(f"eval.{key}=[] is empty; give at least one lr, e.g. [0.05]")
    if not e.linear.l2:
        raise ConfigError("eval.linear.l2=[] is empty; give at least one penalty, e.g. [1e-4]")
    for protocol, key in (
        ("knn", "knn.k"),
        ("finetune", "finetune.fractions"),
        ("pseudo-label", "pseudo.ratios"),
    ):
        if protocol in e.protocols and not _lookup(cfg, f"eval.{key}")[1]:
            raise ConfigError(
                f"eval.{key}=[] is empty but eval.protocols has {protocol!r}; give at least one "
                f"value or remove {protocol!r} from eval.protocols"
            )


def label_fraction(cfg: Config) -> float | None:
    """The share of training labels a run trains on: the supervised baseline's or joint
    training's; None for a self-supervised run."""
    if cfg.method.name == "supervised":
        return cfg.method.label_fraction
    return cfg.joint.label_fraction if cfg.joint.enabled else None


def method_label(cfg: Config) -> str:
    """The method as results tables name it: ``vicreg``, ``supervised``, ``vicreg+joint``."""
    return cfg.method.name + ("+joint" if cfg.joint.enabled else "")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=5"`` -> (["train", "epochs"], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse value: {err}") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key of ``overrides`` in a copy of nested ``data``."""
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    method: dict[str, Any] | None = None,
) -> Config:
    """Defaults <- YAML file <- dotted overrides, validated. ``method`` replaces the file's
    method section before the overrides (``selfsup supervised`` on an SSL config)."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path, "config file", "configs/")
    if method is not None:
        data["method"] = dict(method)
    return config_from_dict(apply_overrides(data, overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# Published evaluation settings, applied with ``selfsup eval RUN --preset NAME`` (before any
# key=value given on the command line). Each cites where its numbers come from.
EVAL_PRESETS: dict[str, tuple[str, list[str]]] = {
    "vicreg-linear": (
        "facebookresearch/vicreg README.md @4e12602 'Linear evaluation' (--lr-head 0.02) with "
        "evaluate.py @7c44ca0 defaults: 100 epochs, batch 256, weight decay 1e-6, SGD momentum "
        "0.9, cosine, RandomResizedCrop + flip",
        [
            "eval.protocols=[linear-aug]",
            "eval.linear_aug.epochs=100",
            "eval.linear_aug.lrs=[0.02]",
            "eval.linear_aug.weight_decay=1e-6",
            "eval.finetune.batch_size=256",
            "eval.crop_scale=[0.08,1.0]",
            "eval.min_steps=0",
        ],
    ),
    "vicreg-semi-1pct": (
        "facebookresearch/vicreg README.md @4e12602 'Semi-supervised evaluation', 1% labels: "
        "20 epochs, --lr-backbone 0.03 --lr-classifier 0.08 --weight-decay 0 (batch 256, "
        "evaluate.py default)",
        [
            "eval.protocols=[finetune]",
            "eval.finetune.fractions=[0.01]",
            "eval.finetune.epochs=20",
            "eval.finetune.lrs=[0.03]",
            f"eval.finetune.head_lr_scale={0.08 / 0.03!r}",
            "eval.finetune.weight_decay=0.0",
            "eval.finetune.batch_size=256",
            "eval.crop_scale=[0.08,1.0]",
            "eval.min_steps=0",
        ],
    ),
    "vicreg-semi-10pct": (
        "facebookresearch/vicreg README.md @4e12602 'Semi-supervised evaluation', 10% labels: "
        "20 epochs, --lr-backbone 0.01 --lr-classifier 0.1 --weight-decay 0 (batch 256)",
        [
            "eval.protocols=[finetune]",
            "eval.finetune.fractions=[0.1]",
            "eval.finetune.epochs=20",
            "eval.finetune.lrs=[0.01]",
            "eval.finetune.head_lr_scale=10.0",
            "eval.finetune.weight_decay=0.0",
            "eval.finetune.batch_size=256",
            "eval.crop_scale=[0.08,1.0]",
            "eval.min_steps=0",
        ],
    ),
}


def preset_overrides(name: str) -> list[str]:
    """The ``eval.*`` overrides of a published evaluation preset, or a ConfigError naming the
    valid presets."""
    if name not in EVAL_PRESETS:
        raise ConfigError(f"unknown eval preset {name!r}; valid: {', '.join(EVAL_PRESETS)}")
    return list(EVAL_PRESETS[name][1])
