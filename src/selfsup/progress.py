"""Progress of a long loop, readable on a terminal and in a log file.

On a terminal (or in a notebook) :func:`progress` is a tqdm bar. Where stderr is not a
terminal (``selfsup pretrain ... 2> log``, a scheduler's output file) a bar would write one
``\\r`` update per step onto a single line; :class:`LineProgress` prints a plain line instead
at each tenth of the way and at least every ``every_s`` seconds. Every bar carries a label that
says what it measures (``pretrain vicreg``, ``finetune-0.1-s0 lr=0.05 (cifar10-pretrained)``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from tqdm.auto import tqdm


class Progress(Protocol):
    """What the loops use of a bar (a subset of tqdm's interface)."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, refresh: bool = True, **values: Any) -> Any: ...

    def write(self, text: str) -> Any: ...

    def close(self) -> Any: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...


def progress(
    total: int, desc: str, *, unit: str = "step", initial: int = 0, enabled: bool = True
) -> Progress:
    """A labelled bar for ``total`` units: tqdm on a terminal or in a notebook, else
    :class:`LineProgress`; nothing is shown when not ``enabled``."""
    if not enabled or sys.stderr.isatty() or "ipykernel" in sys.modules:
        off = not enabled
        return tqdm(
            total=total, desc=desc, unit=unit, initial=initial, disable=off, dynamic_ncols=True
        )
    return LineProgress(total, desc, unit=unit, initial=initial)


class LineProgress:
    """Plain lines ``DESC: N/TOTAL UNITs (P%), elapsed 0:01:02, ETA 0:10:00, loss=...`` on
    stderr: one at each tenth of ``total`` and one at least every ``every_s`` seconds (the
    first at once), and a last one at :meth:`close` if the end was not printed."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "step",
        initial: int = 0,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        file: IO[str] | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s, self._clock, self._file = every_s, clock, file
        self._start = self._last = clock()
        self._initial = initial
        self._printed = initial  # the n of the last line printed
        self._postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        tenth = max(1, self.total // 10)
        if self.n // tenth > self._printed // tenth or now - self._last >= self.every_s:
            self._print(now)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        print(text, file=self._file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.n != self._printed:
            self._print(self._clock())

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _print(self, now: float) -> None:
        self._last, self._printed = now, self.n
        elapsed = now - self._start
        parts = [f"{self.n}/{self.total} {self.unit}s ({100 * self.n / max(self.total, 1):.0f}%)"]
        parts.append(f"elapsed {_clock_text(elapsed)}")
        done = self.n - self._initial
        if done > 0 and self.n < self.total:
            parts.append(f"ETA {_clock_text(elapsed / done * (self.total - self.n))}")
        if self._postfix:
            parts.append(self._postfix)
        self.write(f"{self.desc}: {', '.join(parts)}")


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
