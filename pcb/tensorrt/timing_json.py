"""trtexec's JSON exports -> numbers: per-query timings (--exportTimes), per-layer times
(--exportProfile), and the check of the timings against the printed summary.

The formats are those `exportJSONTrace` and `Profiler::exportJSONProfile` write
(samples/common/sampleReporting.cpp of NVIDIA/TensorRT):

- times: `[ { "startEnqMs" : ..., "endEnqMs" : ..., "startH2dMs" : ..., "endH2dMs" : ...,
  "startComputeMs" : ..., "endComputeMs" : ..., "startD2hMs" : ..., "endD2hMs" : ...,
  "h2dMs" : ..., "computeMs" : ..., "d2hMs" : ..., "latencyMs" : ... }, ... ]` from 8.0;
  TensorRT 7 named the copies `In`/`Out` (`startInMs`, `inMs`, `endOutMs`, ...) and added
  `endToEndMs`. Up to 8.4 the warm-up queries are in the file too; from 8.5 they are not.
- profile: `[ { "count" : N }, { "name" : ..., "timeMs" : ..., "averageMs" : ...,
  ["medianMs" : ... (8.4 on),] "percentage" : ... }, ... ]`.

The summary is computed as trtexec computes its printed one (`printPerformanceReport`,
`getPerformanceResult`, `findMedian`, `findPercentile`): queries whose compute started before
the warm-up time are dropped, the GPU compute times are sorted, the median of an even count is
the mean of the middle two, percentile p is element `max(n - 1 - int((1 - p/100) * n), 0)`,
and the host walltime runs from the first timed query's input copy to the last query's output
copy. A test checks this against a real trtexec 8.4 export and the summary printed with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..perf import LatencyStats

DEFAULT_WARMUP_MS = 200.0  # trtexec's --warmUp default, in every version
DEFAULT_PERCENTILES = (90.0, 95.0, 99.0)
# Printed figures have 6 significant digits and trtexec sums in float32: agreement within
# 0.1% is agreement; more is another run, a cut file or a different warm-up.
AGREEMENT = 1e-3


@dataclass(frozen=True)
class TimesSummary:
    """The timed queries of one --exportTimes file, summarised as trtexec summarises them."""

    queries: int
    warmups_dropped: int
    gpu_compute: LatencyStats
    percentiles: dict[str, float] = field(default_factory=dict)  # {"90": ms, ...}
    walltime_s: float = 0.0
    qps: float = 0.0
    total_gpu_compute_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "warmups_dropped": self.warmups_dropped,
            "percentiles_ms": dict(self.percentiles),
            "walltime_s": self.walltime_s,
            "qps": self.qps,
            "total_gpu_compute_s": self.total_gpu_compute_s,
        }


def _load(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PcbError(f"trtexec wrote no {what} file {path}: its log says why") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise PcbError(
            f"{path} is not trtexec's {what} JSON ({error}): it is cut short or not trtexec's; "
            "run the stage again"
        ) from None


def _number(record: Mapping[str, Any], key: str, where: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PcbError(f"{where}: {key!r} is {value!r}, expected a number of milliseconds")
    return float(value)


def _percentile(sorted_ms: Sequence[float], percentile: float) -> float:
    count = len(sorted_ms)
    excluded = int((1 - percentile / 100) * count)
    return sorted_ms[max(count - 1 - excluded, 0)]


def _median(sorted_ms: Sequence[float]) -> float:
    middle = len(sorted_ms) // 2
    if len(sorted_ms) % 2:
        return sorted_ms[middle]
    return (sorted_ms[middle - 1] + sorted_ms[middle]) / 2


def _walltime_ms(first: Mapping[str, Any], last: Mapping[str, Any], where: str) -> float:
    if "endD2hMs" in last:
        return _number(last, "endD2hMs", where) - _number(first, "startH2dMs", where)
    # TensorRT 7 wrote the input-copy start under "startEnqMs" (exportJSONTrace of release/7.x
    # prints t.inStart there), and the output-copy end under "endOutMs".
    return _number(last, "endOutMs", where) - _number(first, "startEnqMs", where)


def summarize_times(
    records: Sequence[Mapping[str, Any]],
    warmup_ms: float = DEFAULT_WARMUP_MS,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    where: str = "trtexec --exportTimes",
) -> TimesSummary:
    """trtexec's summary of the exported queries (see the module docstring)."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PcbError(f"{where}: expected a JSON list of per-query objects")
    timed = [r for r in records if _number(r, "startComputeMs", where) >= warmup_ms]
    if not timed:
        raise PcbError(
            f"{where}: none of its {len(records)} queries started after the {warmup_ms:g} ms "
            "warm-up: nothing was timed; run longer (--duration)"
        )
    compute = sorted(_number(r, "computeMs", where) for r in timed)
    mean = sum(compute) / len(compute)
    walltime_ms = _walltime_ms(timed[0], records[-1], where)
    if walltime_ms <= 0:
        raise PcbError(f"{where}: its queries span {walltime_ms} ms: the timestamps are broken")
    stats = LatencyStats(
        min_ms=compute[0],
        mean_ms=mean,
        median_ms=_median(compute),
        p99_ms=_percentile(compute, 99.0),
        max_ms=compute[-1],
    )
    return TimesSummary(
        queries=len(timed),
        warmups_dropped=len(records) - len(timed),
        gpu_compute=stats,
        percentiles={f"{p:g}": _percentile(compute, p) for p in percentiles},
        walltime_s=walltime_ms / 1000,
        qps=len(timed) / walltime_ms * 1000,
        total_gpu_compute_s=sum(compute) / 1000,
    )


def read_times(
    path: Path,
    warmup_ms: float = DEFAULT_WARMUP_MS,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> TimesSummary:
    return summarize_times(_load(path, "--exportTimes"), warmup_ms, percentiles, where=str(path))


# ---- the layer profile -----------------------------------------------------------------------


@dataclass(frozen=True)
class LayerTime:
    name: str
    average_ms: float
    percentage: float
    median_ms: float | None = None  # TensorRT 8.4 on


@dataclass(frozen=True)
class LayerProfile:
    """--exportProfile: how often the engine ran while profiled, and each layer's share."""

    runs: int
    layers: tuple[LayerTime, ...]

    @property
    def total_average_ms(self) -> float:
        return sum(layer.average_ms for layer in self.layers)

    def slowest(self, count: int = 5) -> list[LayerTime]:
        return sorted(self.layers, key=lambda layer: layer.average_ms, reverse=True)[:count]

    def to_dict(self, count: int = 5) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "layers": len(self.layers),
            "total_average_ms": self.total_average_ms,
            "slowest": [
                {"name": t.name, "average_ms": t.average_ms, "percentage": t.percentage}
                for t in self.slowest(count)
            ],
        }


def parse_profile(entries: Any, where: str = "trtexec --exportProfile") -> LayerProfile:
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise PcbError(f'{where}: expected a JSON list starting with {{"count": N}}')
    runs = entries[0].get("count")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 0:
        raise PcbError(f"{where}: the first entry's count is {runs!r}, expected a run count")
    layers = []
    for entry in entries[1:]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise PcbError(f"{where}: a layer entry without a name: {entry!r}")
        median = entry.get("medianMs")
        layers.append(
            LayerTime(
                name=entry["name"],
                average_ms=_number(entry, "averageMs", where),
                percentage=_number(entry, "percentage", where),
                median_ms=None if median is None else _number(entry, "medianMs", where),
            )
        )
    return LayerProfile(runs, tuple(layers))


def read_profile(path: Path) -> LayerProfile:
    return parse_profile(_load(path, "--exportProfile"), where=str(path))


# ---- JSON against the printed summary --------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """The JSON timings against trtexec's printed summary of the same run."""

    status: str  # "ok", "mismatch", or "unavailable" (one side missing)
    largest_difference: float | None  # the largest relative difference found
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "largest_difference": self.largest_difference,
            "message": self.message,
        }


def compare_with_printed(
    times: TimesSummary,
    printed: Mapping[str, float],
    tolerance: float = AGREEMENT,
) -> Agreement:
    """`printed`: what the log printed, e.g. {"min": ms, "mean": ms, "99": ms, "qps": N}; the
    keys missing from it (TensorRT 7 prints no qps) are not compared."""
    ours = {
        "min": times.gpu_compute.min_ms,
        "max": times.gpu_compute.max_ms,
        "mean": times.gpu_compute.mean_ms,
        "median": times.gpu_compute.median_ms,
        **times.percentiles,
        "qps": times.qps,
    }
    differences = {}
    for key, value in printed.items():
        if key in ours and value is not None:
            scale = max(abs(value), abs(ours[key]), 1e-12)
            differences[key] = abs(ours[key] - value) / scale
    if not differences:
        return Agreement("unavailable", None, "no printed figure to compare the JSON with")
    worst = max(differences, key=differences.get)
    largest = differences[worst]
    if largest <= tolerance:
        return Agreement(
            "ok",
            largest,
            f"the exported timings give the printed summary within {largest:.3%}",
        )
    return Agreement(
        "mismatch",
        largest,
        f"the exported timings and the printed summary disagree on {worst}: "
        f"{ours[worst]:.6g} from the JSON, {printed[worst]:.6g} printed ({largest:.2%} > "
        f"{tolerance:.1%}). They should be one run: the JSON may be from an earlier run or cut "
        "short, or the warm-up differs; the figures use the JSON",
    )
