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
        )


@dataclass(frozen=True)
class PerfRecord:
    """Throughput of one platform at one batch size.

    images_per_s follows the guide's formula: 1000 * batch / mean batch latency (ms).
    `scope` says what the figure covers: "process" (a CPU process), "chip", "card", "gpu".
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> PerfRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in payload.items() if k in known}
        values["latency"] = LatencyStats(**payload["latency"])
        return cls(**values)


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
    extra) on the same platform; anything else in the file (another model, an unreadable file)
    is dropped, so no record of another model is shown beside the new ones. Each record keeps
    the time it was measured (extra.timestamp). Sorted by batch size."""
    try:
        old = read_perf_records(path) if path.is_file() else []
    except (OSError, ValueError, KeyError, TypeError, PcbError):
        old = []
    new = {(r.platform, r.batch_size) for r in records}
    models = {(r.platform, r.extra.get(model_key)) for r in records}
    kept = [
        r
        for r in old
        if (r.platform, r.batch_size) not in new
        and (r.platform, r.extra.get(model_key)) in models
        and r.extra.get(model_key) is not None
    ]
    return sorted([*kept, *records], key=lambda r: (r.batch_size, r.platform))
