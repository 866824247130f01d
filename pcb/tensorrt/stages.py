"""The TensorRT stages: trtexec throughput per batch size, and GPU feature dumps.

trt-perf  for each batch size: reuse the saved engine when its record matches (ONNX md5,
          precision, profile, TensorRT version, GPU, calibration cache), else build it from
          the dynamic-batch ONNX; time it with trtexec (flags for the version trtexec reports);
          read the figures from trtexec's --exportTimes JSON, checked against its printed
          summary (the summary alone where no JSON came); store the shared PerfRecord in
          <run>/perf/tensorrt-<precision>.json (trtexec's logs and JSON beside, in a folder).
trt-infer query and gallery bins through the engine of the inference batch size (the one
          trt-perf timed when that size was among its batch sizes), in-process with the
          TensorRT Python API; dumps in the shared layout <run>/dumps/tensorrt-<precision>/
          <split>/<stem>_0.bin with <split>.json records, so `pcb evaluate --backend
          tensorrt-<precision>` and the parity check read them like onnxruntime's.

trtexec runs through a Runner (tools.py), so both stages are tested with stand-ins.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from ..backends import Backend, create_backend
from ..constants import DEFAULT_BATCH_SIZES, SPLITS
from ..errors import PcbError
from ..fileio import atomic_write_text, file_md5
from ..infer import DumpSource, infer_splits, perf_table, read_stems, require_model
from ..layout import RunLayout
from ..perf import PerfRecord, write_perf_records
from ..provenance import host_name, stamp
from .calibration import calibration_md5
from .engine_cache import (
    UNKNOWN,
    EngineSpec,
    build_log_path,
    calibration_cache_path,
    commit_engine,
    decide,
    discard,
    engine_path,
    read_record,
    temp_engine_path,
)
from .flags import check_listed
from .names import BACKEND, SCOPE, TOOL, dump_backend, platform_name
from .timing_json import (
    DEFAULT_WARMUP_MS,
    Agreement,
    compare_with_printed,
    read_profile,
    read_times,
)
from .tools import Completed, Runner, gpu_name, probe_trtexec, resolve_trtexec, run_command
from .trtexec import (
    TRTEXEC,
    Exports,
    TimingOptions,
    build_command,
    join,
    load_command,
    validate_precision,
)
from .trtexec_output import (
    DEFAULT_TOLERANCE,
    TrtexecResult,
    cross_check,
    diagnose,
    parse_device,
    parse_trtexec_output,
    parse_version,
    tail,
)
from .versions import TensorRTVersion


def perf_log_dir(layout: RunLayout, precision: str) -> Path:
    """trtexec's full logs of trt-perf, one per batch size (perf/*.json stays the records)."""
    return layout.root / "perf" / dump_backend(precision)


def _check_device(device: int) -> int:
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise PcbError(f"CUDA device must be a non-negative integer, got {device!r}")
    return device


def _check_batches(batch_sizes: Sequence[int]) -> list[int]:
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in sizes):
        raise PcbError(f"batch sizes must be positive integers, got {sizes}")
    return sizes


# ---- running trtexec against the engine cache ------------------------------------------------


@dataclass(frozen=True)
class Toolchain:
    """What every trtexec call of a stage shares, probed once: the TensorRT version (which
    decides the flags) and the options its --help lists."""

    trtexec: str
    version: TensorRTVersion
    help_text: str
    gpu: str
    runner: Runner

    @property
    def tensorrt_version(self) -> str:
        return str(self.version)

    @classmethod
    def probe(cls, trtexec: str, device: int, runner: Runner) -> Toolchain:
        path = resolve_trtexec(trtexec)
        info = probe_trtexec(path, runner)
        return cls(path, info.version, info.help_text, gpu_name(device, runner), runner)

    def check(self, argv: list[str]) -> None:
        """Refuse, before running it, a command with a flag this trtexec does not list."""
        check_listed(argv, self.help_text, self.version)


@dataclass(frozen=True)
class EngineRun:
    engine: Path
    spec: EngineSpec
    reused: bool
    reason: str  # why it was (re)built, or "cached"
    command: tuple[str, ...]
    output: str  # trtexec's output; "" when a reused engine was not run (build only)


def _run(tools: Toolchain, argv: list[str], log: Path) -> Completed:
    tools.check(argv)
    start = time.perf_counter()
    result = tools.runner(argv)
    seconds = time.perf_counter() - start
    # The whole log is kept whatever happened: it is the evidence behind every figure.
    header = f"# {join(argv)}\n# exit status {result.returncode}, {seconds:.1f} s\n"
    atomic_write_text(log, header + result.output)
    return result


def _failed(argv: list[str], result: Completed, log: Path) -> PcbError:
    advice = diagnose(result.output)
    return PcbError(
        f"trtexec failed with exit status {result.returncode}; its last lines:\n"
        f"{tail(result.output)}\nfull log: {log}\ncommand: {join(argv)}"
        + (f"\n{advice}" if advice else "")
    )


def run_engine(
    layout: RunLayout,
    spec: EngineSpec,
    tools: Toolchain,
    log: Path,
    *,
    device: int = 0,
    timing: TimingOptions | None = None,
    exports: Exports | None = None,
    workspace_mib: int | None = None,
    build_only: bool = False,
    rebuild: bool = False,
) -> EngineRun:
    """Time (or, `build_only`, just provide) the engine of `spec`: the saved one when its
    record matches, else a new one built from the ONNX and saved for next time."""
    batch = spec.opt_batch
    engine = engine_path(layout, spec.precision, batch)
    decision = decide(engine, spec)
    reason = "rebuild asked for" if rebuild else decision.reason
    if decision.reuse and not rebuild:
        if build_only:
            return EngineRun(engine, spec, True, "cached", (), "")
        argv = load_command(
            engine,
            batch,
            version=tools.version,
            device=device,
            timing=timing,
            exports=exports,
            trtexec=tools.trtexec,
        )
        result = _run(tools, argv, log)
        recorded = (read_record(engine) or {}).get("device") or ""
        printed = parse_device(result.output)
        if result.returncode == 0 and not (recorded and printed and recorded != printed):
            return EngineRun(engine, spec, True, "cached", tuple(argv), result.output)
        # A copied run folder can hold an engine of another GPU model, which TensorRT may
        # refuse or run with another GPU's kernels: neither times this GPU, so rebuild.
        reason = (
            f"the saved engine was built on {recorded}, this is {printed}"
            if result.returncode == 0
            else "the saved engine failed to load"
        )
        discard(engine)
    calib = calibration_cache_path(layout) if spec.precision == "int8" else None
    temp = temp_engine_path(engine)
    temp.parent.mkdir(parents=True, exist_ok=True)
    argv = build_command(
        layout.onnx_path,
        temp,
        batch,
        spec.precision,
        version=tools.version,
        calib_cache=calib,
        device=device,
        timing=timing,
        exports=exports,
        workspace_mib=workspace_mib,
        min_batch=spec.min_batch,
        skip_inference=build_only,
        trtexec=tools.trtexec,
    )
    result = _run(tools, argv, log)
    if result.returncode != 0:
        temp.unlink(missing_ok=True)
        raise _failed(argv, result, log)
    commit_engine(
        temp,
        engine,
        spec,
        {
            "device": parse_device(result.output),
            "tensorrt_version_printed": parse_version(result.output),
            "command": join(argv),
            "log": str(log),
            "reason": reason,
            "host": host_name(),
        },
    )
    return EngineRun(engine, spec, False, reason, tuple(argv), result.output)


def _spec(
    layout: RunLayout, onnx_md5: str, precision: str, batch: int, tools: Toolchain
) -> EngineSpec:
    calib_md5 = calibration_md5(layout) if precision == "int8" else ""
    return EngineSpec(
        onnx_md5=onnx_md5,
        precision=precision,
        min_batch=1,
        opt_batch=batch,
        max_batch=batch,
        tensorrt_version=tools.tensorrt_version,
        gpu=tools.gpu,
        calib_md5=calib_md5,
    )


# ---- trt-perf --------------------------------------------------------------------------------


def times_path(layout: RunLayout, precision: str, batch: int) -> Path:
    """trtexec's --exportTimes JSON of one batch size, beside its log."""
    return perf_log_dir(layout, precision) / f"trtexec_bs{batch}.times.json"


def profile_path(layout: RunLayout, precision: str, batch: int) -> Path:
    return perf_log_dir(layout, precision) / f"trtexec_bs{batch}.profile.json"


def _printed(result: TrtexecResult) -> dict[str, float]:
    """The printed figures the JSON can be held against."""
    stats = result.gpu_compute
    printed = {
        "min": stats.min_ms,
        "max": stats.max_ms,
        "mean": stats.mean_ms,
        "median": stats.median_ms,
        **result.percentiles,
    }
    if result.qps is not None:
        printed["qps"] = result.qps
    return printed


@dataclass(frozen=True)
class Measured:
    """One batch size's figures: from the JSON where trtexec wrote it, else from its text."""

    result: TrtexecResult
    source: str  # "exportTimes" or "printed summary"
    agreement: Agreement | None  # JSON against text, when both exist
    warmups_dropped: int = 0  # queries of the JSON inside the warm-up (exported up to 8.4)


def _measure(output: str, times_file: Path, warmup_ms: float) -> Measured:
    if not times_file.is_file():
        return Measured(parse_trtexec_output(output), "printed summary", None)
    times = read_times(times_file, warmup_ms)
    printed: TrtexecResult | None
    try:
        printed = parse_trtexec_output(output)
    except PcbError:
        printed = None  # the JSON stands on its own
    result = TrtexecResult(
        format="exportTimes",
        gpu_compute=times.gpu_compute,
        percentiles=dict(times.percentiles),
        qps=times.qps,
        queries=times.queries,
        total_gpu_compute_s=times.total_gpu_compute_s,
        total_host_walltime_s=times.walltime_s,
        tensorrt_version=parse_version(output),
        device=parse_device(output),
    )
    agreement = compare_with_printed(times, _printed(printed)) if printed else None
    return Measured(result, "exportTimes", agreement, times.warmups_dropped)


def run_trt_perf(
    layout: RunLayout,
    precision: str = "fp16",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    *,
    device: int = 0,
    timing: TimingOptions | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    strict: bool = False,
    rebuild: bool = False,
    profile: bool = False,
    workspace_mib: int | None = None,
    trtexec: str = TRTEXEC,
    runner: Runner = run_command,
    quiet: bool = False,
) -> list[PerfRecord]:
    """trtexec at every batch size; writes `<run>/perf/tensorrt-<precision>.json`.

    The figures come from trtexec's --exportTimes JSON (every timed query), summarised as
    trtexec summarises them, and are checked against the summary it printed (they must agree
    within 0.1%); a log without the JSON falls back to the printed summary. images/s = 1000 x
    batch / mean GPU compute ms (the guide's formula), cross-checked against Throughput x
    batch: a disagreement beyond `tolerance` is a warning (an error with `strict`, raised once
    every batch size is measured and written), as is a JSON that disagrees with the text.
    `profile` adds trtexec's per-layer profile, taken in a separate run.
    """
    precision = validate_precision(precision)
    sizes = _check_batches(batch_sizes)
    device = _check_device(device)
    onnx = require_model(layout)
    onnx_md5 = file_md5(onnx)
    tools = Toolchain.probe(trtexec, device, runner)
    timing = timing or TimingOptions()
    warmup_ms = float(timing.warmup_ms) if timing.warmup_ms is not None else DEFAULT_WARMUP_MS
    logs = perf_log_dir(layout, precision)
    # trtexec writes its JSON through a plain ofstream: into a missing folder it writes
    # nothing and says nothing.
    logs.mkdir(parents=True, exist_ok=True)
    records: list[PerfRecord] = []
    warnings: list[str] = []
    for batch in tqdm(sizes, desc=f"trtexec {precision}", unit="batch", disable=quiet):
        spec = _spec(layout, onnx_md5, precision, batch, tools)
        exports = Exports(
            times=times_path(layout, precision, batch),
            profile=profile_path(layout, precision, batch) if profile else None,
        )
        # A file of an earlier run must not pass for this one's.
        for stale in (exports.times, exports.profile):
            if stale is not None:
                stale.unlink(missing_ok=True)
        run = run_engine(
            layout,
            spec,
            tools,
            logs / f"trtexec_bs{batch}.log",
            device=device,
            timing=timing,
            exports=exports,
            workspace_mib=workspace_mib,
            rebuild=rebuild,
        )
        measured = _measure(run.output, exports.times, warmup_ms)
        result = measured.result
        check = cross_check(result, batch, tolerance)
        gpu = result.device or (tools.gpu if tools.gpu != UNKNOWN else "")
        extra: dict[str, Any] = {
            "precision": precision,
            "formula": "1000 x batch / mean GPU compute ms",
            "timing_source": measured.source,
            "cross_check": check.to_dict(),
            **result.summary(),
            "engine": str(run.engine),
            "engine_key": run.spec.key(),
            "engine_reused": run.reused,
            "engine_reason": run.reason,
            "onnx_md5": onnx_md5,
            "shapes": run.spec.shapes(),
            "cuda_device": device,
            "trtexec_command": join(run.command),
            "log": str(logs / f"trtexec_bs{batch}.log"),
            **stamp(),
        }
        if measured.source == "exportTimes":
            extra["times_json"] = str(exports.times)
            extra["warmup_ms"] = warmup_ms
            extra["warmups_dropped"] = measured.warmups_dropped
        if measured.agreement is not None:
            extra["json_vs_printed"] = measured.agreement.to_dict()
            if measured.agreement.status == "mismatch":
                warnings.append(f"batch {batch}: {measured.agreement.message}")
                print(f"warning: batch {batch}: {measured.agreement.message}", file=sys.stderr)
        if exports.profile is not None and exports.profile.is_file():
            extra["layer_profile"] = {
                "file": str(exports.profile),
                **read_profile(exports.profile).to_dict(),
            }
        record = PerfRecord(
            platform=platform_name(gpu, precision),
            backend=BACKEND,
            batch_size=batch,
            images_per_s=result.images_per_s(batch),
            latency=result.gpu_compute,
            iterations=result.queries or 0,
            scope=SCOPE,
            tool=TOOL,
            tool_version=result.tensorrt_version or tools.tensorrt_version,
            device=gpu or UNKNOWN,
            extra=extra,
        )
        records.append(record)
        if check.status == "warn":
            warnings.append(f"batch {batch}: {check.message}")
            print(f"warning: batch {batch}: {check.message}", file=sys.stderr)
    path = layout.perf_path(dump_backend(precision))
    write_perf_records(path, records)
    print(f"{records[0].platform} on {records[0].device}, TensorRT {records[0].tool_version}")
    print(perf_table(records))
    print(f"written: {path} (trtexec logs: {logs})")
    if strict and warnings:
        raise PcbError(
            "throughput checks failed (--strict): "
            + " | ".join(warnings)
            + f". The records are written to {path} with the disagreement noted"
        )
    return records


# ---- trt-infer -------------------------------------------------------------------------------


BackendFactory = Callable[[int], Backend]


def _tensorrt_backend(device: int) -> Backend:
    return create_backend("tensorrt", device=device)


def run_trt_infer(
    layout: RunLayout,
    precision: str = "fp16",
    batch_size: int = 16,
    *,
    device: int = 0,
    trtexec: str = TRTEXEC,
    runner: Runner = run_command,
    backend_factory: BackendFactory = _tensorrt_backend,
    quiet: bool = False,
) -> dict[str, int]:
    """Query and gallery bins -> `<run>/dumps/tensorrt-<precision>/<split>/<stem>_0.bin`.

    The engine is the one of `batch_size` (built now with trtexec when not saved yet).
    Resumable like `pcb infer`: complete dumps are kept unless the split's record names
    another engine or model, in which case the split is redone.
    """
    precision = validate_precision(precision)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise PcbError(f"batch size must be a positive integer, got {batch_size!r}")
    device = _check_device(device)
    # Every input checked before any work, as `pcb infer` does.
    stems_by_split = {split: read_stems(layout.info_path(split)) for split in SPLITS}
    onnx = require_model(layout)
    onnx_md5 = file_md5(onnx)
    tools = Toolchain.probe(trtexec, device, runner)
    spec = _spec(layout, onnx_md5, precision, batch_size, tools)
    engine = engine_path(layout, precision, batch_size)
    run = run_engine(layout, spec, tools, build_log_path(engine), device=device, build_only=True)
    if not quiet:
        how = "saved engine" if run.reused else f"engine built now ({run.reason})"
        print(f"{precision}: {how}: {run.engine}")
    name = dump_backend(precision)
    key = spec.key()

    def open_backend() -> Backend:
        backend = backend_factory(device)
        backend.load(run.engine, batch_size)
        return backend

    source = DumpSource(
        name=name,
        model_md5=onnx_md5,
        identity={"engine_key": key, "model_md5": onnx_md5},
        changed="engine or model changed since the last run, recomputing dumps",
        fields={
            "model": str(onnx),
            "model_md5": onnx_md5,
            "engine": str(run.engine),
            "engine_key": key,
            "precision": precision,
            "device": (read_record(run.engine) or {}).get("device") or tools.gpu,
            "cuda_device": device,
            "batch_size": batch_size,
        },
        open=open_backend,
        version=lambda loaded: loaded.version() if loaded else tools.tensorrt_version,
    )
    counts = infer_splits(layout, source, stems_by_split, batch_size, quiet)
    if not quiet:
        print(f"evaluate them with: python -m pcb evaluate --run {layout.root} --backend {name}")
    return counts
