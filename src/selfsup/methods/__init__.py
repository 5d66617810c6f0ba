"""SSL methods: one file per method, each registering itself (:mod:`.registry`).

Importing this package imports every module in it, so a method's file is found without an
edit anywhere else; ``import selfsup`` does it at the first method lookup
(:func:`selfsup.registry.provided_by`), not before.
"""

from __future__ import annotations

import importlib
import pkgutil

from selfsup.methods.base import Method, StepOutput
from selfsup.methods.build import build_method
from selfsup.methods.registry import (
    METHOD_CONFIGS,
    METHODS,
    MethodConfig,
    MethodSpec,
    pair,
    register,
    register_method,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "METHOD_CONFIGS",
    "Method",
    "MethodConfig",
    "MethodSpec",
    "StepOutput",
    "build_method",
    "pair",
    "register",
    "register_method",
]
