"""Typed configs: dataclasses saved and loaded as YAML, overridden with dotted keys.

A config is built from (1) the dataclass defaults, (2) a YAML file, (3) ``key=value`` overrides
(``train.epochs=5``), in that order. The ``method`` section's type depends on ``method.name``
(each method has its own dataclass with its paper's defaults), so the name is resolved first.
Every unknown key and every value of the wrong type is a :class:`ConfigError` that names the
valid keys, so a typo never silently trains the wrong thing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from selfsup.errors import ConfigError
from selfsup.registry import Registry

METHOD_CONFIGS: Registry[type] = Registry("method")


@dataclass
class MethodConfig:
    """Fields every method has; each method subclasses it with its own hyper-parameters."""

    name: str = "vicreg"


@METHOD_CONFIGS.register("vicreg")
@dataclass
class VICRegConfig(MethodConfig):
    """VICReg (Bardes et al., ICLR 2022), defaults of facebookresearch/vicreg main_vicreg.py."""

    name: str = "vicreg"
    projector: str = "8192-8192-8192"  # hidden-...-output widths after the backbone features
    sim_weight: float = 25.0  # --sim-coeff
    var_weight: float = 25.0  # --std-coeff
    cov_weight: float = 1.0  # --cov-coeff


@dataclass
class BackboneConfig:
    name: str = "resnet18"  # resnet18 | resnet34 | resnet50 | small_resnet
    stem: str = "auto"  # auto (small stem for <= 64 px) | small | imagenet
    depths: list[int] = field(default_factory=lambda: [2, 1, 1, 1])  # small_resnet only
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])  # small_resnet only


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


@dataclass
class ViewsConfig:
    size: int | None = None  # output side of the views; None: the images' own size
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "lars"  # lars | adamw | sgd
    lr: float = 0.2  # base lr; the lr used is lr * batch_size / 256 (the official VICReg rule)
    weight_decay: float = 1e-6
    momentum: float = 0.9  # lars / sgd
    warmup_epochs: float = 10.0
    final_lr_ratio: float = 0.001  # cosine ends at lr * final_lr_ratio
    grad_clip: float | None = None  # max global grad norm; None: off
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    channels_last: bool = True  # on CUDA only
    compile: bool = False  # torch.compile the method
    log_every: int = 10  # steps between metric flushes (one host sync per flush)
    progress: bool = True  # show a progress bar


@dataclass
class EvalConfig:
    protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])
    datasets: list[str] = field(default_factory=list)  # extra eval datasets (transfer)
    knn_k: list[int] = field(default_factory=lambda: [20, 200])
    knn_temperature: float = 0.07
    linear_epochs: int = 100
    linear_batch_size: int = 256
    linear_lr: float = 1e-3
    linear_weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-3])
    val_fraction: float = 0.1  # carved from the training split for hyper-parameter choice
    train_limit: int | None = None  # at most this many train images for kNN bank / probe fit
    test_limit: int | None = None  # at most this many test images (reported as n_test)
    compare_random: bool = True  # also evaluate a randomly initialised backbone
    monitor_every: int = 0  # online kNN every N epochs during pretraining (0: off)
    monitor_limit: int = 2000  # images used by the online kNN monitor
    batch_size: int = 512  # feature extraction batch


@dataclass
class Config:
    method: MethodConfig = field(default_factory=VICRegConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
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
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; valid keys at {where}: "
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
    data = dict(data or {})
    if not isinstance(data.get("method", {}), dict):
        raise ConfigError("method: expected a mapping with at least 'name'")
    method = dict(data.pop("method", {}) or {})
    method_cls = METHOD_CONFIGS.get(method.get("name", MethodConfig.name))
    cfg = _build(Config, data, "")
    cfg.method = _build(method_cls, method, "method.")
    check_choices(cfg)
    return cfg


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("train", "optimizer"): ("lars", "adamw", "sgd"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "precision"): ("auto", "bf16", "fp32"),
    ("backbone", "stem"): ("auto", "small", "imagenet"),
}


def check_choices(cfg: Config) -> None:
    """Enumerated values must be one of their choices (names in registries are checked where
    they are looked up)."""
    for (section, key), valid in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in valid:
            raise ConfigError(
                f"{section}.{key}={value!r} is not valid; valid choices: {', '.join(valid)}"
            )


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
    import copy

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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- dotted overrides, validated."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"config file {str(path)!r} does not exist (see configs/ for examples)"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    return config_from_dict(apply_overrides(data, overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
