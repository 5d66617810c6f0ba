"""Test-wide settings: the raw-pixel baseline cache (``selfsup.evaluate.baseline_cache``) is
off, so that no test writes into the home directory or reads another test's records; the
cache's own tests turn it on in a temporary directory."""

import os

os.environ["SELFSUP_CACHE"] = "off"  # also for the CLI subprocesses the tests start
