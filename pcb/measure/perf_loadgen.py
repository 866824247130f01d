"""Throughput per batch size measured by MLPerf LoadGen, with repeats judged for stability.

For each batch size: warm-up batches (untimed; the last one tells LoadGen what to expect),
then the Offline scenario `repeats` times (images/s = LoadGen's samples per second; the
median is the figure, the spread across repeats says whether it is stable, pcb.measure.stability),
then, at the batch sizes asked for, one SingleStream run (latency percentiles of one batch
at a time, judged by LoadGen's own early-stopping rule). The load average is read before and
after each batch size. Every figure records what was timed and by which tool.

`run_perf_loadgen` is what the perf stage calls for in-process backends; `sweep` is the same
measurement on any callable, for the benchmarks and the GPU script. The fixed-iteration
timer (`pcb.infer.run_perf`) stays for hosts without LoadGen.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import DEFAULT_BATCH_SIZES, INPUT_BYTES, INPUT_SHAPE
from ..errors import PcbError
from ..perf import (
    LatencyStats,
    PerfRecord,
    merge_perf_records,
    read_perf_records,
    write_perf_records,
)
from .loadgen_harness import (
    SCENARIOS,
    LoadGenRules,
    RunBatch,
    ScenarioRun,
    run_scenario,
    short_of_duration,
    warm_up,
)
from .stability import (
    DEFAULT_MAX_SPREAD,
    DEFAULT_REPEATS,
    MachineLoad,
    Spread,
    load_average,
    machine_load,
    spread,
)

POOL_IMAGES = 64
POOL_SEED = 0
TIMER = "mlperf-loadgen"
LOG_FOLDER = "loadgen"
# An Offline run LoadGen ended short of its minimum duration is run again at most this many
# times, expecting this much more than it measured.
MAX_RERUNS = 3
RERUN_HEADROOM = 1.25


@dataclass(frozen=True)
class MeasureSettings:
    """What a LoadGen measurement does at each batch size."""

    rules: LoadGenRules
    scenarios: tuple[str, ...] = SCENARIOS
    # Batch sizes SingleStream runs at; None = every batch size of the sweep.
    single_stream_batch_sizes: tuple[int, ...] | None = (1,)
    warmup: int = 1
    repeats: int = DEFAULT_REPEATS
    max_spread: float = DEFAULT_MAX_SPREAD

    def __post_init__(self) -> None:
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise PcbError(
                f"unknown LoadGen scenario(s) {unknown or '(none given)'}: use "
                f"{', '.join(SCENARIOS)}"
            )
        if self.warmup < 0 or self.repeats < 1:
            raise PcbError(
                f"need warmup >= 0 and repeats >= 1, got warmup={self.warmup} "
                f"repeats={self.repeats}"
            )

    def runs_single_stream(self, batch_size: int) -> bool:
        if "SingleStream" not in self.scenarios:
            return False
        wanted = self.single_stream_batch_sizes
        return wanted is None or batch_size in wanted

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["rules"] = self.rules.to_dict()
        payload["scenarios"] = list(self.scenarios)
        if self.single_stream_batch_sizes is not None:
            payload["single_stream_batch_sizes"] = list(self.single_stream_batch_sizes)
        return payload


@dataclass
class BatchMeasurement:
    """Everything measured at one batch size."""

    batch_size: int
    offline: list[ScenarioRun] = field(default_factory=list)
    single_stream: ScenarioRun | None = None
    throughput: Spread | None = None
    load: MachineLoad | None = None
    # Offline runs repeated because the warm-up's estimate was too slow (short_of_duration).
    reruns: int = 0

    @property
    def images_per_s(self) -> float:
        if self.throughput is not None:
            return self.throughput.median
        if self.single_stream is not None:
            return self.single_stream.images_per_s
        raise PcbError(f"batch {self.batch_size}: nothing was measured")

    @property
    def runs(self) -> list[ScenarioRun]:
        return self.offline + ([self.single_stream] if self.single_stream else [])

    @property
    def valid(self) -> bool:
        return all(run.valid for run in self.runs)

    @property
    def loadgen_version(self) -> str:
        return next((r.loadgen_version for r in self.runs if r.loadgen_version), "")

    def latency(self) -> LatencyStats:
        """SingleStream's percentiles where it ran, else every Offline batch's own time."""
        if self.single_stream is not None:
            summary = self.single_stream.summary
            values = {
                "min_ms": summary.min_latency_ns,
                "mean_ms": summary.mean_latency_ns,
                "max_ms": summary.max_latency_ns,
            }
            p50, p90, p99 = (summary.percentile_ms(p) for p in (50, 90, 99))
            if None not in values.values() and None not in (p50, p99):
                return LatencyStats(
                    min_ms=values["min_ms"] / 1e6,
                    mean_ms=values["mean_ms"] / 1e6,
                    median_ms=p50,
                    p99_ms=p99,
                    max_ms=values["max_ms"] / 1e6,
                    p90_ms=p90,
                )
        samples = [ms for run in self.offline for ms in run.batch_ms]
        return LatencyStats.from_samples(samples)

    def timed(self) -> str:
        throughput = (
            f"images/s: LoadGen Offline samples per second (sample = image, run in batches of "
            f"{self.batch_size}, wall time from issue to completion), median of "
            f"{len(self.offline)} runs"
            if self.offline
            else "images/s: LoadGen SingleStream queries per second x batch"
        )
        if self.single_stream is not None:
            latency = (
                f"latency: LoadGen SingleStream (query = one batch of {self.batch_size}), "
                "wall time from issue to completion"
            )
        else:
            latency = (
                "latency: each batch inside the Offline runs, time.perf_counter around the "
                "backend call (gather of the batch not included)"
            )
        return f"{throughput}; {latency}"


def _measure_one(
    run_batch: RunBatch,
    pool: np.ndarray,
    batch_size: int,
    settings: MeasureSettings,
    log_root: Path,
) -> BatchMeasurement:
    before = load_average()
    last = warm_up(run_batch, pool, batch_size, settings.warmup)
    measured = BatchMeasurement(batch_size)
    if "Offline" in settings.scenarios:
        for index in range(settings.repeats):
            log_dir = log_root / f"bs{batch_size}" / f"Offline-{index + 1}"
            run = run_scenario(
                run_batch, pool, batch_size, "Offline", settings.rules, log_dir, last
            )
            for _ in range(MAX_RERUNS):
                if not short_of_duration(run, last):
                    break
                # LoadGen's advice for this failure: expect more, and run again. A short run's
                # rate is itself uncertain, hence the headroom (running longer than the
                # minimum is always valid).
                measured.reruns += 1
                last = batch_size / (run.images_per_s * RERUN_HEADROOM)
                run = run_scenario(
                    run_batch, pool, batch_size, "Offline", settings.rules, log_dir, last
                )
            measured.offline.append(run)
            # Later repeats expect what the first measured: a closer estimate than warm-up.
            last = batch_size / measured.offline[0].images_per_s
        measured.throughput = spread(
            [run.images_per_s for run in measured.offline], settings.max_spread
        )
    if settings.runs_single_stream(batch_size):
        measured.single_stream = run_scenario(
            run_batch,
            pool,
            batch_size,
            "SingleStream",
            settings.rules,
            log_root / f"bs{batch_size}" / "SingleStream",
            last,
        )
    measured.load = machine_load(before, load_average())
    return measured


def sweep(
    run_batch: RunBatch,
    pool: np.ndarray,
    batch_sizes: Sequence[int],
    settings: MeasureSettings,
    log_root: Path,
    progress: Callable[[str], None] | None = None,
) -> list[BatchMeasurement]:
    """LoadGen measurements of `run_batch` at every batch size, logs under `log_root`."""
    if not batch_sizes or any(b <= 0 for b in batch_sizes):
        raise PcbError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    results = []
    for size in batch_sizes:
        measured = _measure_one(run_batch, pool, size, settings, Path(log_root))
        if progress is not None:
            progress(describe(measured))
        results.append(measured)
    return results


def describe(measured: BatchMeasurement) -> str:
    parts = [f"batch {measured.batch_size}: {measured.images_per_s:.1f} images/s"]
    if measured.throughput is not None:
        parts.append(measured.throughput.describe())
    if measured.single_stream is not None:
        summary = measured.single_stream.summary
        p50, p90, p99 = (summary.percentile_ms(p) for p in (50, 90, 99))
        if p50 is not None and p90 is not None and p99 is not None:
            parts.append(f"SingleStream p50/p90/p99 {p50:.2f}/{p90:.2f}/{p99:.2f} ms")
    parts.append("LoadGen " + ("VALID" if measured.valid else "INVALID"))
    if measured.load is not None:
        parts.append(measured.load.describe())
    return "; ".join(parts)


def input_pool(bins: Sequence[Path], count: int = POOL_IMAGES) -> tuple[np.ndarray, str]:
    """Up to `count` preprocessed images to time on, else seeded random ones; and which."""
    usable = [p for p in sorted(bins) if p.stat().st_size == INPUT_BYTES][:count]
    if usable:
        images = np.stack([np.fromfile(p, dtype=np.float32).reshape(INPUT_SHAPE) for p in usable])
        return images, f"{len(usable)} preprocessed images of the run"
    rng = np.random.default_rng(POOL_SEED)
    images = rng.standard_normal((count, *INPUT_SHAPE), dtype=np.float32)
    return images, f"{count} random normal images, seed {POOL_SEED}"


def to_record(
    measured: BatchMeasurement,
    platform: str,
    backend: str,
    tool: str,
    tool_version: str,
    device: str,
    scope: str,
    extra: dict[str, Any],
) -> PerfRecord:
    """One perf record: Offline's median images/s, the latency, LoadGen's summaries."""
    loadgen: dict[str, Any] = {
        "offline": [run.to_dict() for run in measured.offline],
        "single_stream": measured.single_stream.to_dict() if measured.single_stream else None,
    }
    spread_ = measured.throughput
    load = measured.load
    return PerfRecord(
        platform=platform,
        backend=backend,
        batch_size=measured.batch_size,
        images_per_s=measured.images_per_s,
        latency=measured.latency(),
        iterations=sum(len(run.batch_ms) for run in measured.runs),
        scope=scope,
        tool=tool,
        tool_version=tool_version,
        device=device,
        extra={
            **extra,
            "loadgen": loadgen,
            "throughput_spread": spread_.to_dict() if spread_ else None,
            "offline_reruns": measured.reruns,
        },
        timed=measured.timed(),
        timer=f"{TIMER} {measured.loadgen_version}".strip(),
        loadgen_valid=measured.valid,
        repeats=len(measured.offline) or 1,
        cv=spread_.cv if spread_ else None,
        stable=spread_.stable if spread_ else None,
        load_before=list(load.before) if load and load.before else None,
        load_after=list(load.after) if load and load.after else None,
    )


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[value]


def loadgen_table(records: Sequence[PerfRecord]) -> str:
    """Per batch: images/s with its spread and stability, latency percentiles, validity."""
    from tabulate import tabulate

    rows = []
    for r in records:
        p90 = r.latency.p90_ms
        rows.append(
            [
                str(r.batch_size),
                f"{r.images_per_s:.1f}",
                "-" if r.cv is None else f"{100 * r.cv:.1f}",
                _yes_no(r.stable),
                f"{r.latency.median_ms:.2f}",
                "-" if p90 is None else f"{p90:.2f}",
                f"{r.latency.p99_ms:.2f}",
                _yes_no(r.loadgen_valid),
            ]
        )
    headers = ["batch", "images/s", "CV %", "stable", "p50 ms", "p90 ms", "p99 ms", "valid"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _reusable(
    path: Path, platform: str, batch_sizes: Sequence[int], wanted: dict[str, Any]
) -> list[PerfRecord] | None:
    """The records in `path` of these batch sizes when they measured exactly this with LoadGen,
    else None (the file may hold other batch sizes beside them: perf records merge)."""
    if not path.is_file():
        return None
    try:
        stored = read_perf_records(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    by_size = {r.batch_size: r for r in stored if r.platform == platform}
    if any(size not in by_size for size in batch_sizes):
        return None
    records = [by_size[size] for size in batch_sizes]
    for record in records:
        if record.platform != platform or not record.timer.startswith(TIMER):
            return None
        if any(record.extra.get(key) != value for key, value in wanted.items()):
            return None
    return records


def run_perf_loadgen(
    layout: Any,
    backend: str = "onnxruntime",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    settings: MeasureSettings | None = None,
    threads: int = 0,
    quiet: bool = False,
    force: bool = False,
) -> list[PerfRecord]:
    """The perf stage with LoadGen: `<run>/perf/<backend>.json` and LoadGen's logs beside it.

    Logs go to `<run>/perf/loadgen/<backend>/bs<N>/<scenario>[-<repeat>]/`. As with the
    fixed-iteration timer, a measurement of the same model with the same settings on this
    host is kept (`force` measures again).
    """
    from ..backends import create_backend
    from ..backends.base import resolve_threads
    from ..infer import backend_model, backend_precision, cpu_name, perf_platform
    from ..provenance import host_name, stamp
    from ..record.digest import cached_md5

    settings = settings or MeasureSettings(rules=LoadGenRules.loadgen_defaults())
    engine = create_backend(backend)
    model_path = backend_model(engine, layout, quiet)
    platform = getattr(engine, "platform_name", lambda: perf_platform(backend))()
    device = getattr(engine, "device_name", cpu_name)()
    scope = getattr(engine, "scope", "process")
    used_threads = resolve_threads(threads)
    bins = list(layout.bins_dir("gallery").glob("*.bin")) + list(
        layout.bins_dir("query").glob("*.bin")
    )
    wanted = {
        "model_md5": cached_md5(model_path, layout.root),
        "threads": used_threads,
        "measurement": settings.to_dict(),
        "host": host_name(),
        "tool_version": engine.version(),
    }
    perf_path = layout.perf_path(backend)
    kept = None if force else _reusable(perf_path, platform, batch_sizes, wanted)
    if kept is not None:
        print(f"{platform} on {device}, {used_threads} threads (LoadGen)")
        print(loadgen_table(kept))
        print(f"kept: {perf_path} (same model and settings on this host; --force measures again)")
        return kept
    engine.load(model_path, None, threads)
    pool, described = input_pool(bins)
    log_root = perf_path.parent / LOG_FOLDER / backend

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    measured = sweep(engine.run, pool, batch_sizes, settings, log_root, progress=say)
    common = {
        **wanted,
        "precision": backend_precision(engine),
        "input": described,
        "python": sys.version.split()[0],
        **stamp(),
    }
    records = [
        to_record(m, platform, backend, engine.name, engine.version(), device, scope, common)
        for m in measured
    ]
    merged = merge_perf_records(perf_path, records)
    write_perf_records(perf_path, merged)
    print(f"{platform} on {device}, {used_threads} threads, timed by LoadGen")
    print(loadgen_table(records))
    invalid = [str(r.batch_size) for r in records if r.loadgen_valid is False]
    unstable = [str(r.batch_size) for r in records if r.stable is False]
    if invalid:
        print(f"LoadGen called the runs at batch {', '.join(invalid)} INVALID (see its logs)")
    if unstable:
        print(
            f"unstable (repeats more than {settings.max_spread:.0%} apart) at batch "
            f"{', '.join(unstable)}: other work shared the machine, or the runs were too short"
        )
    others = len(merged) - len(records)
    kept_note = f"; kept {others} earlier batch size(s) of the same model" if others else ""
    print(f"written: {perf_path}{kept_note} (LoadGen logs: {log_root})")
    return records
