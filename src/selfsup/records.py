"""The schema of an evaluation record (one line of ``results.json["records"]``): which of its
fields identify a measurement across seeds.

It lives below both the evaluation (which writes records) and the run directory (which merges a
rerun's records into the saved ones), so that neither has to import the other.
"""

from __future__ import annotations

from typing import Any

IDENTITY = (
    "protocol",
    "dataset",
    "init",
    "settings_id",
    "k",
    "fraction",
    "ratio",
    "threshold",
    "ema_teacher",
)


def measurement_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a measurement across seeds: (protocol, dataset, init, settings_id, k,
    fraction, ratio, threshold, ema_teacher), absent fields as None. ``init`` defaults to
    "pretrained" for older records; ``ema_teacher`` is True for a record of an EMA teacher's
    backbone (``"backbone": "teacher"``), None for the student: a method's teacher and student
    are two measurements."""
    return tuple(
        (rec.get("ema_teacher") or rec.get("backbone") == "teacher" or None)  # records, aggregates
        if f == "ema_teacher"
        else rec.get(f, "pretrained" if f == "init" else None)
        for f in IDENTITY
    )


def record_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    """Records with the same key replace each other when a run is evaluated again: the same
    measurement (:func:`measurement_key`, settings included) and seed."""
    return (*measurement_key(rec), rec.get("seed"))
