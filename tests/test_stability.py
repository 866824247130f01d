"""The stability rule: spread across repeats, CV, and the load average around a measurement."""

from __future__ import annotations

import math

import pytest

from pcb.errors import PcbError
from pcb.measure.stability import (
    DEFAULT_MAX_SPREAD,
    load_average,
    machine_load,
    repeat,
    spread,
)


def test_spread_within_ten_percent_is_stable() -> None:
    result = spread([100.0, 104.0, 109.0])
    assert result.stable
    assert result.median == 104.0
    assert result.max_over_min == pytest.approx(1.09)
    # Population standard deviation over the mean.
    mean = (100 + 104 + 109) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in (100, 104, 109)) / 3)
    assert result.cv == pytest.approx(std / mean)


def test_spread_beyond_the_rule_is_unstable() -> None:
    result = spread([100.0, 111.0, 104.0])
    assert not result.stable
    assert "UNSTABLE" in result.describe()


def test_exactly_ten_percent_passes_as_perf_analyzer_counts_it() -> None:
    assert spread([100.0, 110.0]).stable
    assert DEFAULT_MAX_SPREAD == 0.10


def test_one_repeat_shows_no_spread_and_is_never_stable() -> None:
    result = spread([42.0])
    assert result.cv == 0.0
    assert not result.stable


def test_tighter_rule() -> None:
    assert not spread([100.0, 103.0], max_spread=0.02).stable
    assert spread([100.0, 101.0], max_spread=0.02).stable


@pytest.mark.parametrize("values", [[], [1.0, 0.0], [1.0, -2.0], [1.0, float("nan")]])
def test_bad_repeats_are_refused(values: list[float]) -> None:
    with pytest.raises(PcbError):
        spread(values)


def test_machine_load_busy_by_share_of_cores() -> None:
    assert machine_load((0.2, 0.1, 0.1), (1.9, 1.0, 0.5), cores=2).busy is False
    busy = machine_load((1.5, 1.0, 0.5), (2.5, 1.0, 0.5), cores=2)
    assert busy.busy is True
    assert "BUSY" in busy.describe()
    unknown = machine_load(None, None, cores=2)
    assert unknown.busy is None
    assert "unknown" in unknown.describe()


def test_repeat_reads_load_once_before_and_once_after() -> None:
    readings = iter([(0.1, 0.1, 0.1), (1.8, 0.5, 0.2)])
    calls: list[int] = []

    def measure() -> tuple[float, int]:
        calls.append(1)
        return 10.0 + len(calls), len(calls)

    result = repeat(measure, repeats=3, loadavg=lambda: next(readings))
    assert len(calls) == 3
    assert result.spread.values == (11.0, 12.0, 13.0)
    assert result.results == [1, 2, 3]
    assert result.load.before == (0.1, 0.1, 0.1)
    assert result.load.after == (1.8, 0.5, 0.2)
    assert set(result.to_dict()) == {"spread", "load"}


def test_repeat_needs_one_repeat() -> None:
    with pytest.raises(PcbError, match="repeats"):
        repeat(lambda: (1.0, None), repeats=0)


def test_load_average_is_three_numbers_on_linux() -> None:
    value = load_average()
    assert value is not None and len(value) == 3
    assert all(v >= 0 for v in value)
