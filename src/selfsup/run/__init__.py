"""The run directory's own machinery (today: its advisory lock, :mod:`selfsup.run.lock`)."""
