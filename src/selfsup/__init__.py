"""selfsup: self-supervised learning of visual representations.

Pretrain a backbone on unlabeled images, then measure and look at its features.
"""

from selfsup.registry import provided_by

__version__ = "0.1.0"

# every built-in method registers itself (config class, views, builder) when selfsup.methods is
# imported; that import (torch) waits for the first lookup of a method, so that `import selfsup`
# (and `selfsup --help`) stays cheap while a config naming a method parses wherever selfsup is used
provided_by("method", "selfsup.methods")
