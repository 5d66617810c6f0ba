"""Names that become paths: study runs and evaluations, output files, class folders.

Every such name is checked here, in one place, before any path is built from it: a name is one
path component of letters, digits and ``. _ - + =``, not starting with a dot, so it can neither
be absolute, nor climb out with ``..``, nor hide a separator. :func:`child` also checks the
joined path, resolved, still lies inside its parent (a symlinked parent is followed first).
"""

from __future__ import annotations

import re
from pathlib import Path

from selfsup.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")


def check_name(where: str, name: object) -> str:
    """``name`` as a string if it is a safe single path component, else a ConfigError that says
    what is allowed (``where`` names the setting it came from)."""
    text = str(name)
    if not _NAME.fullmatch(text):
        raise ConfigError(
            f"{where}={text!r} is not a valid name: it becomes a file or folder name, so it must "
            "be 1-128 letters, digits or . _ - + = (no '/', no '..', not starting with '.'); "
            "rename it, e.g. 'vicreg_small'"
        )
    return text


def child(parent: Path, name: str, where: str) -> Path:
    """``parent / name`` after :func:`check_name`, refused if it resolves outside ``parent``."""
    path = parent / check_name(where, name)
    if not path.resolve().is_relative_to(parent.resolve()):
        raise ConfigError(f"{where}={name!r} resolves to {path.resolve()}, outside {parent}")
    return path
