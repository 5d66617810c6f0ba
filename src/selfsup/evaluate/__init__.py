"""Evaluation: protocols fit on the training split, the harness scores the test split once
(:mod:`selfsup.evaluate.harness`)."""
