"""Name -> builder registries with errors that list the valid choices."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from selfsup.errors import ConfigError

T = TypeVar("T")

_PROVIDERS: dict[str, str] = {}
"""Registry kind -> the module whose import registers that kind's built-in entries."""


def provided_by(kind: str, module: str) -> None:
    """Say that importing ``module`` fills the registries of ``kind``: it is imported at their
    first lookup, not before. ``import selfsup`` then stays cheap (no torch) while a config
    naming a method still parses wherever selfsup is used."""
    _PROVIDERS[kind] = module


class Registry(Generic[T]):
    """Maps names to objects (usually builders); unknown names raise a :class:`ConfigError`.

    >>> backbones = Registry[Callable]("backbone")
    >>> @backbones.register("resnet18")
    ... def build(): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._provided = False

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def _provide(self) -> None:
        """Import the module that registers the built-in entries (:func:`provided_by`), once."""
        if not self._provided and self.kind in _PROVIDERS:
            self._provided = True
            importlib.import_module(_PROVIDERS[self.kind])

    def get(self, name: str) -> T:
        self._provide()
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        self._provide()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._provide()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
