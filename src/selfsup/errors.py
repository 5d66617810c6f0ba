"""User-facing errors.

Every error a user can cause (a wrong config key, an unknown dataset name, a missing file) is a
:class:`SelfsupError`: the CLI prints its message, without a traceback, and exits with status 2.
The message must say what was wrong and what to do about it.
"""

from __future__ import annotations


class SelfsupError(Exception):
    """Base class of the errors that are the user's to fix (bad input, missing data)."""


class ConfigError(SelfsupError):
    """A config key, value or name is invalid."""


class DataError(SelfsupError):
    """A dataset is missing, corrupt, or in an unexpected format."""


class CheckpointError(SelfsupError):
    """A checkpoint is missing, corrupt, or belongs to another run."""


class WriteError(SelfsupError):
    """A run file could not be written (disk full, permissions); the previous file is intact."""
