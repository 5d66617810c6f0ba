"""Config fields that carry their own checks (a valid range, a list of choices, a crop scale, an
MLP spec, "part of the architecture"), and the conversion of a plain YAML value to a field's type.

Each config section is a dataclass that lives beside what it configures (``train/config.py``,
``data/config.py``, a method's file ...) and declares its fields with :func:`setting`; the
root config (:mod:`selfsup.config`) reads this metadata and checks every value once, when a
config is loaded, with a message that names the key, the value and what it may be. This module
knows nothing of any section, so every layer can declare its settings with it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from selfsup.errors import ConfigError


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
TEMP = "a softmax temperature; small values sharpen"
MAX_SIDE = 4096
"""The largest image or view side: a uint8 image of 4096 x 4096 is 48 MiB and its float view
192 MiB, so a batch of 64 views is 12 GiB before the network sees it (4x SAM's 1024-px input,
18x ImageNet's 224). Beyond it nothing trains, and 100000 used to be a traceback after minutes
of decoding (30 GB per image)."""
SIDE = Range(1, MAX_SIDE)
SIDE_LIMIT = f"at most {MAX_SIDE} (selfsup.fields.MAX_SIDE: a batch of views would not fit)"

_NO_DEFAULT: Any = dataclasses.MISSING


def setting(
    default: Any = _NO_DEFAULT,
    *,
    factory: Any = _NO_DEFAULT,
    valid: Range | None = None,
    what: str = "",
    choices: tuple[str, ...] | None = None,
    scale: str | None = None,
    mlp: bool | str = False,
    arch: bool = False,
) -> Any:
    """A dataclass field with its checks as metadata:

    - ``valid`` / ``what``: the range a number (each entry of a list) must lie in, and what the
      value is, for the message; a null (optional) value is not checked;
    - ``choices``: the values a string may take;
    - ``scale``: a crop scale [lo, hi] with 0 < lo <= hi <= 1 (``scale`` says what null means);
    - ``mlp``: an MLP spec such as ``"2048-128"`` (``"auto"``: also the word auto);
    - ``arch``: the value shapes the weights, so a checkpoint resumes only with the same value.
    """
    meta: dict[str, Any] = {}
    if valid is not None:
        meta["range"] = (valid, what)
    if choices is not None:
        meta["choices"] = tuple(choices)
    if scale is not None:
        meta["scale"] = scale
    if mlp:
        meta["mlp"] = mlp
    if arch:
        meta["arch"] = True
    if factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def choices_of(cls: type, name: str) -> tuple[str, ...]:
    """The valid choices of field ``name`` of config section ``cls``."""
    return next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == name)


def architecture_keys(cls: type) -> tuple[str, ...]:
    """The fields of config section ``cls`` declared ``arch=True``."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("arch"))


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices`` (a field's declared choices, :func:`choices_of`),
    else a ConfigError naming them: for library calls that take a setting's value directly
    rather than through a loaded config (which checked it already)."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; valid choices: {', '.join(choices)}")


# --- a plain (YAML) value as its field's type -------------------------------------------------


def _check_union(value: Any, tp: Any, key: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(value, arg, key)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")


def _check_number(value: Any, tp: type, key: str) -> Any:
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
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


def convert(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _check_union(value, tp, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float):
        return _check_number(value, tp, key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp} for {key}")
