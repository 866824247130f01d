"""MLPerf LoadGen as the harness for in-process backends (onnxruntime, TensorRT's API, torch).

LoadGen (`mlcommons-loadgen`, `import mlperf_loadgen`) decides when queries are issued, how
many and for how long, times every one from issue to completion, applies its own rules for
a valid run (minimum duration, minimum query count, early stopping) and writes the summary
every MLPerf submitter knows. This module is the system under test it drives:

- Offline: LoadGen issues one query holding all its samples; a sample is one image of the
  pool, and the SUT runs them in batches of `batch_size` (gathered into one contiguous
  buffer, the gather included in the time), completing each batch as it finishes. LoadGen's
  samples per second is then images per second at that batch size. Its sample count is
  expected QPS x minimum duration x 1.1 (LoadGen's rule), so the expected QPS is set from
  the warm-up batches: too low an estimate ends the run before the minimum duration, and
  LoadGen calls the run INVALID, as it would any submitter's.
- SingleStream: one query at a time, each the next only after the previous one completed;
  a sample here is one whole batch of `batch_size` images (one query = one batch, as trtexec
  and ais_bench count); at batch 1 this is MLPerf's SingleStream exactly. LoadGen reports the
  latency percentiles (p50, p90, p99, ...) and needs at least 64 queries for its early
  stopping estimate, without which it calls the run INVALID.

The SUT runs each query in LoadGen's issue thread, as the MLPerf reference application's
plain runner does (vision/classification_and_detection/python/main.py, RunnerBase), which
suits one backend using every core. Every batch is also timed here with time.perf_counter,
so Offline runs give a per-batch latency distribution too. LoadGen writes its logs into a
temporary folder renamed into place when the test has ended, so a killed run leaves no half
log under its final name.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PcbError
from .loadgen_summary import (
    DETAIL_NAME,
    SUMMARY_NAME,
    LoadGenSummary,
    loadgen_version,
    parse_detail,
    read_summary,
)

SCENARIOS = ("Offline", "SingleStream")
# Distinct batches SingleStream cycles through (LoadGen picks samples at random among them).
SINGLE_STREAM_BATCHES = 4
# LoadGen's early-stopping estimate needs this many SingleStream queries; fewer and it calls
# the run INVALID ("Need to process at least 64 queries for early stopping", LoadGen 6.0).
EARLY_STOPPING_MIN_QUERIES = 64

RunBatch = Callable[[np.ndarray], Any]


def _lg() -> Any:
    try:
        import mlperf_loadgen
    except ImportError as error:
        raise PcbError(
            f"MLPerf LoadGen is not installed ({error}): `pip install mlcommons-loadgen` "
            "(or `pip install -e .[loadgen]`), or measure with the fixed-iteration timer"
        ) from None
    return mlperf_loadgen


@dataclass(frozen=True)
class LoadGenRules:
    """How long and how many queries LoadGen must run before it calls a run valid."""

    min_duration_ms: int
    min_query_count: int
    max_duration_ms: int = 0  # 0: no upper bound (LoadGen's default)
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.min_duration_ms < 0 or self.min_query_count < 1 or self.max_duration_ms < 0:
            raise PcbError(
                f"LoadGen rules need min_duration_ms >= 0, min_query_count >= 1 and "
                f"max_duration_ms >= 0, got {self.min_duration_ms}, {self.min_query_count}, "
                f"{self.max_duration_ms}"
            )

    @classmethod
    def loadgen_defaults(cls) -> LoadGenRules:
        """What LoadGen itself uses when nothing is set (read from it, not copied here)."""
        settings = _lg().TestSettings()
        return cls(
            min_duration_ms=int(settings.min_duration_ms),
            min_query_count=int(settings.min_query_count),
            max_duration_ms=int(settings.max_duration_ms),
            name="loadgen-defaults",
        )

    @classmethod
    def quick(cls) -> LoadGenRules:
        """A short run: 1 s, and the 64 SingleStream queries early stopping needs."""
        return cls(min_duration_ms=1000, min_query_count=EARLY_STOPPING_MIN_QUERIES, name="quick")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScenarioRun:
    """One LoadGen test of one scenario at one batch size."""

    scenario: str
    batch_size: int
    summary: LoadGenSummary
    loadgen_version: str
    log_dir: str
    images_per_s: float  # Offline: samples/s; SingleStream: batch x queries/s
    batch_ms: list[float] = field(default_factory=list)  # every batch, time.perf_counter
    wall_s: float = 0.0

    @property
    def valid(self) -> bool:
        return self.summary.valid

    def to_dict(self, with_batches: bool = False) -> dict[str, Any]:
        payload = {
            "scenario": self.scenario,
            "batch_size": self.batch_size,
            "valid": self.valid,
            "images_per_s": self.images_per_s,
            "loadgen_version": self.loadgen_version,
            "log_dir": self.log_dir,
            "wall_s": round(self.wall_s, 3),
            "batches_timed": len(self.batch_ms),
            "summary": self.summary.to_dict(),
        }
        if with_batches:
            payload["batch_ms"] = self.batch_ms
        return payload


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise PcbError(f"unknown LoadGen scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")


def _images_of(summary: LoadGenSummary, scenario: str, batch_size: int) -> float:
    if scenario == "Offline":
        if summary.samples_per_second is None:
            raise PcbError("LoadGen's Offline summary has no 'Samples per second' line")
        return summary.samples_per_second
    qps = summary.qps_without_overhead or summary.qps_with_overhead
    if qps is None:
        raise PcbError("LoadGen's SingleStream summary has no QPS line")
    return qps * batch_size


class _Sut:
    """The system under test: runs what LoadGen issues through `run_batch`, timing each batch.

    An exception inside LoadGen's thread cannot propagate through it, so it is kept, every
    outstanding sample is completed (LoadGen then ends its test) and it is raised afterwards.
    """

    def __init__(
        self, lg: Any, run_batch: RunBatch, pool: np.ndarray, batch_size: int, scenario: str
    ) -> None:
        self.lg = lg
        self.run_batch = run_batch
        self.batch_size = batch_size
        self.scenario = scenario
        self.batch_ms: list[float] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        if scenario == "Offline":
            self.samples = pool
            self._buffer = np.empty((batch_size, *pool.shape[1:]), dtype=pool.dtype)
        else:
            rng = np.random.default_rng(0)
            count = SINGLE_STREAM_BATCHES
            self.samples = np.stack(
                [pool[rng.integers(0, len(pool), batch_size)] for _ in range(count)]
            )

    def _complete(self, queries: Sequence[Any]) -> None:
        self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(q.id, 0, 0) for q in queries])

    def _timed(self, batch: np.ndarray) -> None:
        start = time.perf_counter()
        self.run_batch(batch)
        self.batch_ms.append((time.perf_counter() - start) * 1000.0)

    def issue(self, queries: Sequence[Any]) -> None:
        if self.error is not None:
            self._complete(queries)
            return
        try:
            if self.scenario == "SingleStream":
                for query in queries:
                    self._timed(self.samples[query.index])
                    self._complete([query])
                return
            for start in range(0, len(queries), self.batch_size):
                chunk = queries[start : start + self.batch_size]
                indices = np.fromiter((q.index for q in chunk), dtype=np.int64, count=len(chunk))
                batch = self._buffer[: len(chunk)]
                np.take(self.samples, indices, axis=0, out=batch)
                self._timed(batch)
                self._complete(chunk)
        except BaseException as error:  # kept and raised after StartTest: see the docstring
            with self._lock:
                self.error = self.error or error
            self._complete(queries)

    def flush(self) -> None:
        """LoadGen's flush: nothing is queued here, every query is run as it is issued."""


def _settings(
    lg: Any, scenario: str, rules: LoadGenRules, expected_batch_s: float | None, batch_size: int
) -> Any:
    """LoadGen's settings; `expected_batch_s` None leaves LoadGen's own expectations."""
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = rules.min_duration_ms
    settings.min_query_count = rules.min_query_count
    settings.max_duration_ms = rules.max_duration_ms
    if expected_batch_s is not None:
        if not math.isfinite(expected_batch_s) or expected_batch_s <= 0:
            raise PcbError(f"expected batch time must be positive, got {expected_batch_s} s")
        if scenario == "Offline":
            settings.offline_expected_qps = batch_size / expected_batch_s
        else:
            settings.single_stream_expected_latency_ns = max(1, int(expected_batch_s * 1e9))
    return settings


def run_scenario(
    run_batch: RunBatch,
    pool: np.ndarray,
    batch_size: int,
    scenario: str,
    rules: LoadGenRules,
    log_dir: Path,
    expected_batch_s: float | None,
) -> ScenarioRun:
    """One LoadGen performance test; its logs end up in `log_dir` (replaced if there)."""
    _check_scenario(scenario)
    if batch_size <= 0:
        raise PcbError(f"batch size must be positive, got {batch_size}")
    if pool.ndim < 2 or len(pool) == 0:
        raise PcbError("LoadGen needs a non-empty pool of input images (N x C x H x W)")
    lg = _lg()
    log_dir = Path(log_dir)
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    building = log_dir.parent / f".{log_dir.name}.{os.getpid()}.tmp"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    sut = _Sut(lg, run_batch, pool, batch_size, scenario)
    count = len(sut.samples)
    log = lg.LogSettings()
    log.log_output.outdir = str(building)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    settings = _settings(lg, scenario, rules, expected_batch_s, batch_size)
    handle = lg.ConstructSUT(sut.issue, sut.flush)
    library = lg.ConstructQSL(count, count, lambda samples: None, lambda samples: None)
    start = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(handle, library, settings, log)
    finally:
        lg.DestroyQSL(library)
        lg.DestroySUT(handle)
    wall = time.perf_counter() - start
    try:
        if sut.error is not None:
            raise sut.error
        summary = read_summary(building / SUMMARY_NAME)
        detail = parse_detail((building / DETAIL_NAME).read_text(encoding="utf-8"))
        for leftover in ("mlperf_log_trace.json", "mlperf_log_accuracy.json"):
            # Empty in performance mode with tracing off: nothing to keep.
            (building / leftover).unlink(missing_ok=True)
        shutil.rmtree(log_dir, ignore_errors=True)
        os.rename(building, log_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return ScenarioRun(
        scenario=scenario,
        batch_size=batch_size,
        summary=summary,
        loadgen_version=loadgen_version(detail),
        log_dir=str(log_dir),
        images_per_s=_images_of(summary, scenario, batch_size),
        batch_ms=sut.batch_ms,
        wall_s=wall,
    )


def warm_up(run_batch: RunBatch, pool: np.ndarray, batch_size: int, warmup: int) -> float | None:
    """Run `warmup` untimed batches; returns the fastest one's seconds (LoadGen's estimate).

    The fastest, not the last: the first call of a fresh session is often several times
    slower, and too slow an estimate makes LoadGen's Offline query too small to fill its
    minimum duration.
    """
    if warmup < 0:
        raise PcbError(f"warm-up must be >= 0 batches, got {warmup}")
    rng = np.random.default_rng(1)
    batch = pool[rng.integers(0, len(pool), batch_size)]
    fastest = None
    for _ in range(warmup):
        start = time.perf_counter()
        run_batch(batch)
        took = time.perf_counter() - start
        fastest = took if fastest is None else min(fastest, took)
    return fastest


def short_of_duration(run: ScenarioRun, expected_batch_s: float | None) -> bool:
    """An Offline run LoadGen refused only because it ended before its minimum duration,
    having run faster than it was told to expect: LoadGen's own advice is then to raise the
    expected QPS and run again."""
    if run.scenario != "Offline" or run.valid:
        return False
    if run.summary.failed_checks() != ["min_duration"]:
        return False
    expected_rate = None if expected_batch_s is None else run.batch_size / expected_batch_s
    return expected_rate is None or run.images_per_s > expected_rate
