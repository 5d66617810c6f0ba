"""Evaluation: protocols fit on the training split, the harness scores the test split once."""

from selfsup.evaluate import semisupervised  # noqa: F401  (registers the pseudo-label protocol)
