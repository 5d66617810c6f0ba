"""Property tests (hypothesis): the config parser and the batched views on generated input.

(a) Any value of any numeric config key either loads as that value or is a ConfigError, never
another exception; values outside a range written here independently of the declared ranges are
always refused, values inside it always load; a saved config loads back equal.
(b) Any valid :class:`ViewSpec` and every method's recipe give finite float32 views of shape
(B, C, size, size); with mean 0 and std 1 the values are the [0, 1] pixel range (bicubic crops
included: they are clamped, as uint8 crops are).
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfsup.config import Config, config_from_dict, load_config, save_config
from selfsup.data.views import ViewSpec, make_views
from selfsup.errors import ConfigError
from selfsup.fields import MAX_SIDE
from selfsup.methods import METHOD_CONFIGS

FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# --- (a) the config parser ----------------------------------------------------------------


def _scalar_type(tp: typing.Any) -> type | None:
    """int / float for a numeric field (optional or not), else None (lists too)."""
    if typing.get_origin(tp) is list:
        return None
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return args[0] if len(args) == 1 and args[0] in (int, float) else None


def _numeric_keys() -> list[tuple[str, str, type]]:
    """(method name, dotted key, int or float) of every numeric config field: the sections'
    under the default method, each method's own under that method."""
    keys = []
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name == "method":
            continue
        if not dataclasses.is_dataclass(hints[f.name]):
            keys.append(("vicreg", f.name, _scalar_type(hints[f.name])))
            continue
        sec_hints = typing.get_type_hints(hints[f.name])
        for g in dataclasses.fields(hints[f.name]):
            keys.append(("vicreg", f"{f.name}.{g.name}", _scalar_type(sec_hints[g.name])))
    for name in METHOD_CONFIGS.names():
        cls = METHOD_CONFIGS.get(name)
        for g, tp in typing.get_type_hints(cls).items():
            keys.append((name, f"method.{g}", _scalar_type(tp)))
    return [k for k in keys if k[2] is not None]


NUMERIC_KEYS = _numeric_keys()

# The ranges the docs promise, written independently of the declared ranges (the oracle). The base
# config below has train.warmup_epochs=0, so train.epochs only needs to be >= 1.
pos = lambda v: v > 0  # noqa: E731
nonneg = lambda v: v >= 0  # noqa: E731
ge1 = lambda v: v >= 1  # noqa: E731
side = lambda v: 1 <= v <= MAX_SIDE  # noqa: E731  (images at most MAX_SIDE pixels a side)
unit = lambda v: 0 <= v <= 1  # noqa: E731
frac = lambda v: 0 < v <= 1  # noqa: E731
ORACLE: dict[str, typing.Callable[[float], bool]] = {
    "seed": lambda v: 0 <= v < 2**32,
    "train.epochs": ge1,
    "train.batch_size": ge1,
    "train.lr": pos,
    "train.weight_decay": nonneg,
    "train.weight_decay_end": nonneg,
    "train.momentum": lambda v: 0 <= v < 1,
    "train.lars_eta": pos,
    "train.bias_lr_scale": nonneg,
    "train.warmup_epochs": nonneg,  # capped at half the run when it trains (issue #21)
    "train.warmup_min_steps": nonneg,
    "train.final_lr_ratio": unit,
    "train.grad_clip": pos,
    "train.log_every": ge1,
    "train.checkpoint_every": nonneg,
    "data.limit": ge1,
    "data.image_size": side,
    "views.size": side,
    "eval.knn.temperature": pos,
    "eval.val_fraction": lambda v: 0 < v < 1,
    "eval.train_limit": ge1,
    "eval.test_limit": ge1,
    "eval.pseudo.fraction": frac,
    "eval.pseudo.threshold": unit,
    "eval.batch_size": ge1,
    "eval.monitor_limit": lambda v: v >= 2,
    "joint.label_fraction": frac,
    "method.label_fraction": frac,
    "method.temperature": pos,
    "method.student_temp": pos,
    "method.teacher_temp": pos,
    "method.warmup_teacher_temp": pos,
    "method.momentum": unit,
    "method.momentum_final": unit,
    "method.momentum_teacher": unit,
    "method.center_momentum": unit,
    "method.queue_size": ge1,
    "train.skip_nonfinite": nonneg,
    "eval.linear.max_iter": ge1,
    "eval.linear_aug.epochs": ge1,
    "eval.linear_aug.weight_decay": nonneg,
    "eval.finetune.epochs": ge1,
    "eval.finetune.batch_size": ge1,
    "eval.finetune.weight_decay": nonneg,
    "eval.min_steps": nonneg,
    "eval.monitor_every": nonneg,
    "joint.ssl_weight": nonneg,
    "joint.num_classes": nonneg,
    "method.num_classes": nonneg,
    "method.sim_weight": nonneg,
    "method.var_weight": nonneg,
    "method.cov_weight": nonneg,
    "method.lambd": nonneg,
    "method.scale_loss": pos,
    "method.bt_lambd": nonneg,
    "method.bt_weight": nonneg,
    "method.out_dim": ge1,
    "method.hidden_dim": ge1,
    "method.bottleneck_dim": ge1,
    "method.local_crops": nonneg,
    "method.local_size": side,
    "method.freeze_last_layer": nonneg,
    "method.warmup_teacher_temp_epochs": nonneg,
}
BASE = {"train": {"warmup_epochs": 0.0}}

VALUES = st.one_of(
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(),  # nan and +-inf included
    st.floats(-2.0, 2.0),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["1e-4", "nan", "-inf", "0x10", "1_0", ".5"]),
    st.lists(st.integers(0, 3), max_size=2),
)


def _load(method: str, key: str, value: typing.Any) -> Config:
    section, _, name = key.rpartition(".")
    data = {k: dict(v) for k, v in BASE.items()}
    if key == "train.warmup_epochs":
        data["train"] = {}
    data["method"] = {"name": method}
    if section:
        data.setdefault(section, {})[name] = value
    else:
        data[name] = value
    return config_from_dict(data)


def _get(cfg: Config, key: str) -> typing.Any:
    node: typing.Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


@FAST
@given(entry=st.sampled_from(NUMERIC_KEYS), value=VALUES)
def test_numeric_override_loads_as_given_or_is_a_config_error(entry, value) -> None:
    method, key, tp = entry
    try:
        cfg = _load(method, key, value)
    except ConfigError as err:
        assert str(err), "an empty message"
        return
    got = _get(cfg, key)
    if value is None:
        assert got is None
        return
    assert not isinstance(value, (bool, list))
    assert type(got) is tp
    assert got == (float(value) if tp is float else value)
    assert tp is int or math.isfinite(got)  # nan and inf never get in
    if key in ORACLE:
        assert ORACLE[key](got), f"{key}={got!r} loaded but is out of range"


@FAST
@given(
    entry=st.sampled_from([e for e in NUMERIC_KEYS if e[1] in ORACLE]),
    value=st.one_of(st.integers(-(2**40), 2**40), st.floats(-1e6, 1e6), st.floats(-2, 2)),
)
def test_range_oracle(entry, value) -> None:
    """In range: loads; out of range: a ConfigError naming the key."""
    method, key, tp = entry
    if tp is int and isinstance(value, float):
        value = math.floor(value)
    if ORACLE[key](value):
        assert _get(_load(method, key, value), key) == value
    else:
        with pytest.raises(ConfigError) as err:
            _load(method, key, value)
        assert str(err.value).startswith(key + "="), str(err.value)


def _in_range(key: str, tp: type) -> st.SearchStrategy:
    values = st.integers(0, 10**6) if tp is int else st.floats(0, 1) | st.floats(1, 10)
    return values.filter(ORACLE[key])


@st.composite
def valid_configs(draw) -> tuple[str, list[str]]:
    method = draw(st.sampled_from(METHOD_CONFIGS.names()))
    keys = [
        (key, tp)
        for m, key, tp in NUMERIC_KEYS
        if key in ORACLE and (m == method or not key.startswith("method."))
    ]
    chosen = draw(st.lists(st.sampled_from(keys), max_size=6, unique=True))
    overrides = ["train.warmup_epochs=0"]
    for key, tp in chosen:
        if key != "train.warmup_epochs":
            overrides.append(f"{key}={draw(_in_range(key, tp))!r}")
    return method, overrides


@FAST
@given(spec=valid_configs())
def test_save_load_round_trip(tmp_path, spec) -> None:
    method, overrides = spec
    cfg = load_config(None, overrides, method={"name": method})
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert config_from_dict(yaml.safe_load(path.read_text())) == cfg


# --- (b) the batched views ----------------------------------------------------------------


def _pair(lo: float, hi: float) -> st.SearchStrategy[tuple[float, float]]:
    """Ordered pairs lo <= a <= b <= hi."""
    return st.tuples(st.floats(lo, hi), st.floats(lo, hi)).map(lambda p: (min(p), max(p)))


@st.composite
def view_specs(draw, unit_stats: bool) -> tuple[ViewSpec, int]:
    channels = draw(st.sampled_from([1, 3]))
    prob = st.floats(0, 1)
    if unit_stats:
        mean, std = (0.0,), (1.0,)
    else:
        mean = tuple(draw(st.lists(st.floats(0, 1), min_size=channels, max_size=channels)))
        std = tuple(draw(st.lists(st.floats(0.05, 1), min_size=channels, max_size=channels)))
    spec = ViewSpec(
        size=draw(st.integers(8, 48)),
        crop_scale=draw(_pair(1e-3, 1.0)),
        crop_ratio=draw(_pair(0.3, 2.0)),
        interpolation=draw(st.sampled_from(["bilinear", "bicubic"])),
        hflip_p=draw(prob),
        jitter_p=draw(prob),
        brightness=draw(st.floats(0, 1)),
        contrast=draw(st.floats(0, 1)),
        saturation=draw(st.floats(0, 1)),
        hue=draw(st.floats(0, 0.5)),
        grayscale_p=draw(prob),
        blur_p=draw(prob),
        blur_sigma=draw(_pair(0.1, 2.0)),
        blur_kernel=draw(st.sampled_from([1, 3, 5, 9, 23])),
        solarize_p=draw(prob),
        solarize_threshold=draw(st.floats(0, 1)),
        mean=mean,
        std=std,
        random_crop=draw(st.booleans()),
    )
    return spec, channels


def _images(draw, channels: int) -> torch.Tensor:
    b, h, w = draw(st.integers(1, 4)), draw(st.integers(8, 40)), draw(st.integers(8, 40))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, channels, h, w), generator=g).to(torch.uint8)


def _bounds(spec: ViewSpec) -> tuple[float, float]:
    del spec  # every interpolation: a bicubic crop is clamped to [0, 1], as uint8 crops are
    return -1e-6, 1.0 + 1e-6


@FAST
@given(data=st.data(), unit_stats=st.booleans())
def test_any_valid_view_spec_gives_finite_views_of_the_right_shape(data, unit_stats) -> None:
    spec, channels = data.draw(view_specs(unit_stats))
    images = _images(data.draw, channels)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    (view,) = make_views(images, [spec], gen)
    assert view.shape == (len(images), channels, spec.size, spec.size)
    assert view.dtype == torch.float32 and bool(torch.isfinite(view).all())
    if unit_stats:  # normalisation is the identity: the [0, 1] pixel range
        lo, hi = _bounds(spec)
        assert lo <= float(view.min()) and float(view.max()) <= hi, (spec, view.aminmax())


@FAST
@given(data=st.data())
def test_every_recipe_gives_finite_views_in_range(data) -> None:
    from selfsup.methods import METHODS

    method = data.draw(st.sampled_from(METHODS.names()))
    channels = data.draw(st.sampled_from([1, 3]))
    size = data.draw(st.integers(8, 48))
    scale = data.draw(_pair(1e-3, 1.0))
    mean, std = (0.0,) * channels, (1.0,) * channels
    cfg = Config()
    cfg.method = METHOD_CONFIGS.get(method)()
    cfg.views.crop_scale = list(scale)
    if method in ("dino", "dino_twins"):
        cfg.method.local_crops = data.draw(st.integers(0, 3))
        cfg.method.local_size = data.draw(st.integers(8, 24))
        cfg.method.local_scale = list(data.draw(_pair(1e-3, 1.0)))
    specs = METHODS.get(method).views(cfg, size, mean, std)  # the registered recipe
    assert tuple(specs[0].crop_scale) == tuple(scale)  # views.crop_scale reaches the crop
    images = _images(data.draw, channels)
    views = make_views(images, specs, torch.Generator().manual_seed(0))
    assert len(views) == len(specs)
    for spec, view in zip(specs, views, strict=True):
        assert view.shape == (len(images), channels, spec.size, spec.size)
        assert view.dtype == torch.float32 and bool(torch.isfinite(view).all())
        lo, hi = _bounds(spec)
        assert lo <= float(view.min()) and float(view.max()) <= hi
