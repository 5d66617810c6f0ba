"""selfsup: self-supervised learning of visual representations.

Pretrain a backbone on unlabeled images, then measure and look at its features.
"""

__version__ = "0.1.0"
