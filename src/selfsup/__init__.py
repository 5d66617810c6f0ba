"""selfsup: self-supervised learning of visual representations.

Pretrain a backbone on unlabeled images, then measure and look at its features.
"""

__version__ = "0.1.0"

# every built-in method registers itself (config class, views, builder) on import, so that a
# config naming it parses wherever selfsup is used
from selfsup import methods as _methods  # noqa: F401
