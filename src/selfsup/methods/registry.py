"""The method registry: one :class:`MethodSpec` per method, registered by its own file.

A method's file (``methods/<name>.py``) holds its config dataclass (a :class:`MethodConfig`
with its paper's defaults, ranges as field metadata), its view recipe, its builder and the
``@register(...)`` that adds them here. The package imports every module in it
(:mod:`selfsup.methods`), so a new file is found without an edit elsewhere.

``cfg`` below is the run's root config (:class:`selfsup.config.Config`, a layer above this
one): a builder reads its ``method``, ``backbone``, ``views`` and ``joint`` sections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.data.views import ViewSpec
from selfsup.fields import architecture_keys
from selfsup.methods.base import Method
from selfsup.registry import Registry

Views = Callable[[Any, int, Sequence[float], Sequence[float]], list[ViewSpec]]
Build = Callable[[Any, nn.Module, list[ViewSpec]], Method]


@dataclass
class MethodConfig:
    """Fields every method has; each method subclasses it with its own hyper-parameters."""

    name: str = "vicreg"


@dataclass(frozen=True)
class MethodSpec:
    """Everything selfsup needs to know about a method: its name, its config class (a
    :class:`MethodConfig` dataclass with its own defaults), its default crop scale, its views
    (``views(cfg, size, mean, std)`` -> the :class:`ViewSpec` list its ``forward`` expects;
    ``views.crop_scale`` or ``crop_scale``) and its builder (``build(cfg, backbone, specs)`` ->
    the method)."""

    name: str
    config: type
    crop_scale: tuple[float, float]
    views: Views
    build: Build

    def scale(self, cfg: Any) -> tuple[float, float]:
        """The global crop scale: ``views.crop_scale`` when set, else the method's own."""
        return tuple(cfg.views.crop_scale or self.crop_scale)  # type: ignore[return-value]

    def architecture(self) -> tuple[str, ...]:
        """The ``method.*`` keys that shape the weights (declared ``arch=True``): a checkpoint
        resumes only with the same values."""
        return architecture_keys(self.config)


METHODS: Registry[MethodSpec] = Registry("method")
# method name -> its config class (config files and ``method.name=`` parse it)
METHOD_CONFIGS: Registry[type] = Registry("method")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Register a method in one call; every other part (config parsing, views, the builder,
    the CLI's choices, the resume check) reads this. A missing or wrong piece fails here, at
    import, with a message."""
    if not (isinstance(spec.config, type) and issubclass(spec.config, MethodConfig)):
        raise TypeError(f"method {spec.name!r}: config must be a MethodConfig dataclass")
    if len(spec.crop_scale) != 2 or not 0 < spec.crop_scale[0] <= spec.crop_scale[1] <= 1:
        raise TypeError(f"method {spec.name!r}: crop_scale must be (lo, hi) in (0, 1]")
    if spec.config().name != spec.name:
        raise TypeError(
            f"method {spec.name!r}: its config class's default name is "
            f"{spec.config().name!r}; set name: str = {spec.name!r}"
        )
    if not (callable(spec.views) and callable(spec.build)):
        raise TypeError(f"method {spec.name!r}: views and build must be callables")
    if spec.name in METHODS._items:
        raise TypeError(f"method {spec.name!r} is registered twice")
    METHOD_CONFIGS.register(spec.name)(spec.config)
    return METHODS.register(spec.name)(spec)


def register(
    name: str, config: type, *, crop_scale: tuple[float, float], views: Views
) -> Callable[[Build], Build]:
    """Decorate a method's builder to register it with its config, crop scale and views::

    @register("byol", BYOLConfig, crop_scale=(0.08, 1.0), views=pair(recipes.byol_pair))
    def build_byol(cfg, backbone, specs) -> Method: ...
    """

    def add(build: Build) -> Build:
        register_method(MethodSpec(name, config, crop_scale, views, build))
        return build

    return add


def pair(recipe: Callable[..., list[ViewSpec]]) -> Views:
    """Views from a two-view recipe ``(size, mean, std, scale)``, at the method's crop scale
    (``views.crop_scale`` or its registered default)."""

    def views(cfg: Any, size: int, mean: Sequence[float], std: Sequence[float]):
        return recipe(size, mean, std, METHODS.get(cfg.method.name).scale(cfg))

    return views
