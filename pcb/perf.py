"""The throughput record shared by every backend (onnxruntime, ais_bench, trtexec)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PcbError
from .fileio import atomic_write_json, read_json


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one batch, in milliseconds."""

    min_ms: float
    mean_ms: float
    median_ms: float
    p99_ms: float
    max_ms: float
    # Reported where the tool gives it (LoadGen's SingleStream); older records have none.
    p90_ms: float | None = None

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        if len(samples_ms) == 0:
            raise PcbError("no latency samples were measured: use at least one iteration")
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            min_ms=float(values.min()),
            mean_ms=float(values.mean()),
            median_ms=float(np.median(values)),
            p99_ms=float(np.percentile(values, 99)),
            max_ms=float(values.max()),
            p90_ms=float(np.percentile(values, 90)),
        )


@dataclass(frozen=True)
class PerfRecord:
    """Throughput of one platform at one batch size.

    images_per_s follows the guide's formula: 1000 * batch / mean batch latency (ms), except
    where LoadGen measured it (its Offline samples per second; `timed` says so).
    `scope` says what the figure covers: "process" (a CPU process), "chip", "card", "gpu".
    `timed` says what the clock covered (wall time of a batch in this process, the NPU's or
    the GPU's compute time alone) and `timer` which tool read the clock; records written
    before these fields existed get them from their tool (`timing_of`). `repeats`, `cv`,
    `stable`, `load_before` and `load_after` say how far the figure can be trusted
    (pcb.measure.stability); `loadgen_valid` is LoadGen's own verdict on its run rules.
    """

    platform: str
    backend: str
    batch_size: int
    images_per_s: float
    latency: LatencyStats
    iterations: int
    scope: str = "process"
    tool: str = ""
    tool_version: str = ""
    device: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    timed: str = ""
    timer: str = ""
    loadgen_valid: bool | None = None
    repeats: int = 1
    cv: float | None = None
    stable: bool | None = None
    load_before: list[float] | None = None
    load_after: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> PerfRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in payload.items() if k in known}
        values["latency"] = LatencyStats(**payload["latency"])
        return cls(**values)


# What each tool's figure timed, for records that do not say (written before `timed`).
_TIMING_BY_TOOL = {
    "ais_bench": (
        "NPU compute time per batch (ais_bench; host-device copies not included)",
        "ais_bench",
    ),
    "trtexec": (
        "GPU compute time per batch (trtexec; host-device copies not included)",
        "trtexec",
    ),
    "benchmark": (
        "Interface throughputRate of the old benchmark tool (its inference time per batch)",
        "benchmark",
    ),
}
_WALL_TIME = "wall time per batch in this process (input in memory, features returned)"


def timing_of(record: PerfRecord) -> tuple[str, str]:
    """(what was timed, which tool timed it): the record's own, else what its tool times."""
    if record.timed:
        return record.timed, record.timer or record.tool
    if record.tool in _TIMING_BY_TOOL:
        return _TIMING_BY_TOOL[record.tool]
    # The in-process backends (onnxruntime, its int8 variant, the TensorRT Python API, torch)
    # were timed with time.perf_counter around run(): wall time, copies included.
    return _WALL_TIME, f"pcb ({record.tool or record.backend}, time.perf_counter)"


def timing_label(record: PerfRecord) -> str:
    """A table header's few words for `timing_of`: what the clock covered and whose it was,
    e.g. "wall (LoadGen)", "NPU compute (ais_bench)", "GPU compute (trtexec)"."""
    timed, timer = timing_of(record)
    if "NPU compute" in timed:
        kind = "NPU compute"
    elif "GPU compute" in timed:
        kind = "GPU compute"
    elif "wall time" in timed:
        kind = "wall"
    else:
        kind = "inference"
    tool = "LoadGen" if timer.startswith("mlperf-loadgen") else (timer.split() or ["?"])[0]
    return f"{kind} ({tool})"


def images_per_second(batch_size: int, mean_batch_ms: float) -> float:
    if mean_batch_ms <= 0:
        raise PcbError(f"mean batch latency must be positive, got {mean_batch_ms} ms")
    return 1000.0 * batch_size / mean_batch_ms


def write_perf_records(path: Path, records: Sequence[PerfRecord]) -> None:
    atomic_write_json(path, {"records": [r.to_dict() for r in records]})


def read_perf_records(path: Path) -> list[PerfRecord]:
    payload = read_json(path)
    return [PerfRecord.from_dict(item) for item in payload["records"]]


def merge_perf_records(
    path: Path, records: Sequence[PerfRecord], model_key: str = "model_md5"
) -> list[PerfRecord]:
    """`records` with what `path` already holds at the other batch sizes: a new measurement of
    a batch size replaces that size only (`perf --batch-sizes 64` after a full perf keeps
    1..32). An old record is kept only when it measured the same model (`model_key` in its
    extra) on the same platform with the same timer (LoadGen or the fixed loop); anything else
    in the file (another model, another way of timing, an unreadable file) is dropped, so one
    table never mixes figures that are not comparable. Each record keeps the time it was
    measured (extra.timestamp). Sorted by batch size."""
    try:
        old = read_perf_records(path) if path.is_file() else []
    except (OSError, ValueError, KeyError, TypeError, PcbError):
        old = []
    new = {(r.platform, r.batch_size) for r in records}
    measured_as = {(r.platform, r.extra.get(model_key), r.timer) for r in records}
    kept = [
        r
        for r in old
        if (r.platform, r.batch_size) not in new
        and (r.platform, r.extra.get(model_key), r.timer) in measured_as
        and r.extra.get(model_key) is not None
    ]
    return sorted([*kept, *records], key=lambda r: (r.batch_size, r.platform))
