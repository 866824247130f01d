"""Progress that shows wherever a stage runs.

On a terminal (the caller's, or a container's when the caller has one: the docker executor
then gives the container a TTY) a live tqdm bar. Anywhere else (a CI log, a pipe, a container
without a TTY), where a bar's carriage-return updates are held until a newline arrives and
then come all at once, one line at the start, one every `interval` seconds (count, percent,
rate, ETA) and one at the end. `quiet` silences both.

The lines are plain text flushed as they are written, each starting with the step's name and
carrying no terminal codes, so that a watcher outside (a CI log, `time`) sees them when they
happen: the first one comes before the step's first item, which makes "time to the first
progress line" measurable from outside.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

# Seconds between two progress lines; PCB_PROGRESS_INTERVAL overrides (CI logs may want more;
# the docker executor passes it on to the stage containers).
DEFAULT_INTERVAL_S = 10.0
PROGRESS_INTERVAL_ENV = "PCB_PROGRESS_INTERVAL"


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get(PROGRESS_INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class LineProgress:
    """tqdm's update/close/context-manager subset, as lines at a steady interval."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        initial: int = 0,
        interval: float | None = None,
        out: IO[str] | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.initial = initial
        self.interval = interval_s() if interval is None else interval
        self.out = out or sys.stderr
        self.clock = clock
        self.start = self.last = clock()
        self.closed = False
        resumed = f" ({initial} done before)" if initial else ""
        of = f"/{total}" if total is not None else ""
        self._say(f"{desc}: {initial}{of} {unit}{resumed}, started")

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _rate(self, now: float) -> float:
        spent = now - self.start
        return (self.n - self.initial) / spent if spent > 0 else 0.0

    def line(self, now: float) -> str:
        rate = self._rate(now)
        parts = [f"{self.desc}: {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        parts.append(f"elapsed {_duration(now - self.start)}")
        return ", ".join(parts)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval and (self.total is None or self.n < self.total):
            self.last = now
            self._say(self.line(now))

    def close(self, stopped: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        now = self.clock()
        if stopped:
            self._say(f"{self.line(now)}; stopped")
            return
        rate = self._rate(now)
        self._say(
            f"{self.desc}: {self.n}{f'/{self.total}' if self.total is not None else ''} "
            f"{self.unit} done in {_duration(now - self.start)} ({rate:.1f} {self.unit}/s)"
        )

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self.close(stopped=kind is not None)


class _Silent:
    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def live(stream: IO[str] | None = None) -> bool:
    """Whether progress goes to a terminal, where a bar redraws in place."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(
    total: int | None,
    desc: str,
    unit: str,
    quiet: bool = False,
    initial: int = 0,
    leave: bool = True,
) -> Any:
    """A bar on a terminal, lines elsewhere, nothing when `quiet`; use as a context manager
    and call update(n)."""
    if quiet:
        return _Silent()
    if live():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)
    return LineProgress(total, desc, unit, initial=initial)


def track(
    items: Iterable[T], desc: str, unit: str, quiet: bool = False, total: int | None = None
) -> Iterator[T]:
    """`items`, with progress after each (see progress)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(total, desc, unit, quiet) as bar:
        for item in items:
            yield item
            bar.update(1)
