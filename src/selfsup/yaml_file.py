"""Reading a YAML file a user wrote (a config, a study file): whatever its bytes, a mapping or a
:class:`ConfigError` naming the file and what is wrong with it, never a Python traceback.

``yaml.safe_load`` builds plain data only (no tags that construct objects), but it raises more
than ``YAMLError`` on text it cannot turn into data: ``ValueError`` for a date that does not
exist (``2001-02-30``), ``RecursionError`` for nesting deeper than Python's recursion limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from selfsup.errors import ConfigError

_KINDS = {"int": "a number", "float": "a number", "str": "a string", "bool": "true or false"}


def read_yaml_mapping(path: str | Path, what: str, examples: str) -> dict[Any, Any]:
    """The mapping at the top of the YAML file ``path`` (an empty file is ``{}``). ``what``
    names the file in errors ("config file"), ``examples`` says where good ones are."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist (see {examples} for examples)")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read the {what} {str(path)!r}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text ({err})") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = _KINDS.get(type(data).__name__, f"a {type(data).__name__}")
        raise ConfigError(
            f"{what} {str(path)!r} holds {kind}, not a mapping of keys to values (such as "
            f"`train: {{epochs: 5}}`; see {examples})"
        )
    return data
