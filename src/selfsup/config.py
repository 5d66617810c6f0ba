"""The root config: its sections, loading from YAML, dotted overrides and the generic checks.

A config is built from (1) the dataclass defaults, (2) a YAML file, (3) ``key=value`` overrides
(``train.epochs=5``), in that order. Each section is a dataclass beside what it configures
(``train/config.py``, ``data/config.py``, ``evaluate/config.py``, ...); the ``method`` section's
type depends on ``method.name`` (each method's file declares its own dataclass with its paper's
defaults), so the name is resolved first. Every unknown key, every value of the wrong type and
every value outside the range or choices its field declares (:mod:`selfsup.fields`) is a
:class:`ConfigError` naming the key and what is valid, checked once, here, at load.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from selfsup.analysis.config import VizConfig
from selfsup.atomic import write_text_atomic
from selfsup.backbones.config import BackboneConfig
from selfsup.data.config import DataConfig, ViewsConfig
from selfsup.errors import ConfigError
from selfsup.evaluate.config import RETIRED_KEYS, EvalConfig
from selfsup.fields import Range, convert, setting
from selfsup.heads import parse_mlp_spec
from selfsup.methods.joint import JointConfig
from selfsup.methods.registry import METHOD_CONFIGS, MethodConfig
from selfsup.train.config import TrainConfig
from selfsup.yaml_file import read_yaml_mapping

__all__ = [
    "BackboneConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "JointConfig",
    "MethodConfig",
    "TrainConfig",
    "ViewsConfig",
    "VizConfig",
    "load_config",
]


def _default_method() -> MethodConfig:
    return METHOD_CONFIGS.get(MethodConfig.name)()


@dataclass
class Config:
    method: MethodConfig = setting(factory=_default_method)
    backbone: BackboneConfig = setting(factory=BackboneConfig)
    data: DataConfig = setting(factory=DataConfig)
    views: ViewsConfig = setting(factory=ViewsConfig)
    train: TrainConfig = setting(factory=TrainConfig)
    eval: EvalConfig = setting(factory=EvalConfig)
    joint: JointConfig = setting(factory=JointConfig)
    viz: VizConfig = setting(factory=VizConfig)
    seed: int = setting(0, valid=Range(0, 2**32 - 1), what="a random seed")


# --- building a typed config from plain data ------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def migrate_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config (``config.yaml`` of an earlier selfsup) in today's keys: retired
    keys (:data:`RETIRED_KEYS`) carried over where they still mean something, dropped where
    they do not. A config a user writes is not migrated: its retired keys are refused with the
    new key's name."""
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


def _refuse_unknown(data: dict[str, Any], types_: dict[str, Any], prefix: str) -> None:
    unknown = sorted((k for k in data if k not in types_), key=str)  # keys: any YAML scalar
    if not unknown:
        return
    where = prefix.rstrip(".") or "the top level"
    retired = RETIRED_KEYS.get((prefix.rstrip("."), unknown[0]))
    if retired:
        raise ConfigError(f"{prefix}{unknown[0]} was replaced by {retired[0]}")
    raise ConfigError(
        f"unknown config key {f'{prefix}{unknown[0]}'!r}; valid keys at {where}: "
        + ", ".join(prefix + k for k in types_)
    )


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    types_ = _field_types(cls)
    _refuse_unknown(data, types_, prefix)
    kwargs = {}
    for name, tp in types_.items():
        if name not in data:
            continue
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], key + ".")
        else:
            kwargs[name] = convert(data[name], tp, key)
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
    check_values(cfg)
    return cfg


# --- the generic checks: each field's declared range / choices / scale / MLP spec ----------


def _check_field(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(
            f"{key}={value!r} is not valid; valid choices: {', '.join(meta['choices'])}"
        )
    if "range" in meta:
        valid, what = meta["range"]
        for i, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if v not in valid:
                name = key if i is None else f"{key}[{i}]"
                raise ConfigError(
                    f"{name}={v!r} is out of range ({what}); set it to a value {valid}"
                )
    if "scale" in meta and (len(value) != 2 or not 0 < value[0] <= value[1] <= 1):
        raise ConfigError(
            f"{key}={value!r} is not a crop scale ({meta['scale']}): set it to two numbers "
            "[lo, hi] with 0 < lo <= hi <= 1, shares of the image area"
        )
    if meta.get("mlp") and not (meta["mlp"] == "auto" and value == "auto"):
        try:
            parse_mlp_spec(value)
        except ConfigError as err:
            raise ConfigError(f"{key}={value!r} is not valid: {err}") from None


def check_values(node: Any, prefix: str = "") -> None:
    """Every value in its declared range / among its choices (a null, optional value is not
    checked), then each section's own ``check()`` (fields that depend on each other): a bad
    value fails here, before any data is read or anything trained, naming the key, the value
    and what it may be."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, f"{prefix}{f.name}.")
        elif value is not None:
            _check_field(prefix + f.name, value, f.metadata)
    check = getattr(node, "check", None)
    if callable(check):
        check()


# --- what a run is, for its labels -----------------------------------------------------------


def label_fraction(cfg: Config) -> float | None:
    """The share of training labels a run trains on: the supervised baseline's or joint
    training's; None for a self-supervised run."""
    if cfg.method.name == "supervised":
        return cfg.method.label_fraction
    return cfg.joint.label_fraction if cfg.joint.enabled else None


def method_label(cfg: Config) -> str:
    """The method as results tables name it: ``vicreg``, ``supervised``, ``vicreg+joint``."""
    return cfg.method.name + ("+joint" if cfg.joint.enabled else "")


# --- loading, overrides, saving --------------------------------------------------------------


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
