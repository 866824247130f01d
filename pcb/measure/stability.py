"""Whether a measured figure can be trusted: spread across repeats and the machine's load.

A throughput figure measured once says nothing about how much it moves. Here a figure is
measured several times (each repeat a time- or count-bounded run of its own) and judged like
Triton's perf_analyzer judges its windows: stable when the largest and the smallest of the
repeats are within `max_spread` of each other (perf_analyzer's --stability-percentage,
default 10 %, over its last 3 measurements; docs/cli.md of triton-inference-server/client).
The coefficient of variation (standard deviation / mean) is reported beside it, the spread
users of other tools quote. The load average before and after says whether other work shared
the machine; a busy machine is named, not hidden.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import PcbError
from . import DEFAULT_REPEATS

# perf_analyzer's default stability percentage: max / min of the repeats within 10 %.
DEFAULT_MAX_SPREAD = 0.10
# A 1-minute load average above this share of the cores before a run means other work was
# running: the figure is then still reported, with the machine named busy.
BUSY_LOAD_PER_CORE = 0.25


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15-minute load averages, None where the OS has none (Windows)."""
    try:
        one, five, fifteen = os.getloadavg()
    except (OSError, AttributeError):
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Spread:
    """Repeats of one figure: what varied, and whether that is within the rule."""

    values: tuple[float, ...]
    median: float
    mean: float
    minimum: float
    maximum: float
    cv: float  # population standard deviation / mean; 0 for one repeat
    max_over_min: float
    max_spread: float
    stable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verdict = "stable" if self.stable else "UNSTABLE"
        return (
            f"{verdict}: {len(self.values)} repeats, CV {100 * self.cv:.1f} %, max/min "
            f"{self.max_over_min:.3f} (rule: <= {1 + self.max_spread:.2f})"
        )


def spread(values: Sequence[float], max_spread: float = DEFAULT_MAX_SPREAD) -> Spread:
    """The spread of `values` (all positive: rates or times) judged against `max_spread`.

    One repeat cannot show a spread, so it is never called stable.
    """
    if not values:
        raise PcbError("no repeats were measured: use at least one repeat")
    if max_spread < 0:
        raise PcbError(f"max_spread must be >= 0, got {max_spread}")
    numbers = tuple(float(v) for v in values)
    if any(not math.isfinite(v) or v <= 0 for v in numbers):
        raise PcbError(f"repeats must be positive finite numbers, got {list(numbers)}")
    mean = statistics.fmean(numbers)
    cv = statistics.pstdev(numbers) / mean if len(numbers) > 1 else 0.0
    ratio = max(numbers) / min(numbers)
    return Spread(
        values=numbers,
        median=statistics.median(numbers),
        mean=mean,
        minimum=min(numbers),
        maximum=max(numbers),
        cv=cv,
        max_over_min=ratio,
        max_spread=max_spread,
        # A small epsilon so that exactly 10 % passes despite binary rounding.
        stable=len(numbers) > 1 and ratio <= 1 + max_spread + 1e-12,
    )


@dataclass(frozen=True)
class MachineLoad:
    """The load average around a measurement and whether other work was running before it."""

    before: tuple[float, float, float] | None
    after: tuple[float, float, float] | None
    cores: int
    busy: bool | None  # None where the OS reports no load average

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.before is None:
            return "load average unknown on this OS"
        after = f" -> {self.after[0]:.2f}" if self.after else ""
        state = "BUSY" if self.busy else "quiet"
        return f"load {self.before[0]:.2f}{after} on {self.cores} cores ({state} before)"


def machine_load(
    before: tuple[float, float, float] | None,
    after: tuple[float, float, float] | None,
    cores: int | None = None,
    busy_load_per_core: float = BUSY_LOAD_PER_CORE,
) -> MachineLoad:
    cores = cores or usable_cores()
    busy = None if before is None else bool(before[0] > busy_load_per_core * cores)
    return MachineLoad(before=before, after=after, cores=cores, busy=busy)


@dataclass(frozen=True)
class Repeated:
    """A figure measured `repeats` times, with its spread and the load around it all."""

    spread: Spread
    load: MachineLoad
    results: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"spread": self.spread.to_dict(), "load": self.load.to_dict()}


def repeat(
    measure: Callable[[], tuple[float, Any]],
    repeats: int = DEFAULT_REPEATS,
    max_spread: float = DEFAULT_MAX_SPREAD,
    loadavg: Callable[[], tuple[float, float, float] | None] = load_average,
) -> Repeated:
    """Call `measure` `repeats` times; each call returns (figure, anything to keep).

    The load average is read once before the first and once after the last call, so the
    reading before says what else ran, and the one after includes this measurement itself.
    """
    if repeats < 1:
        raise PcbError(f"repeats must be at least 1, got {repeats}")
    before = loadavg()
    values: list[float] = []
    kept: list[Any] = []
    for _ in range(repeats):
        value, result = measure()
        values.append(value)
        kept.append(result)
    after = loadavg()
    return Repeated(
        spread=spread(values, max_spread), load=machine_load(before, after), results=kept
    )
