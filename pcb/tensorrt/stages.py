"""The TensorRT stages: trtexec throughput per batch size, and GPU feature dumps.

trt-perf  for each batch size: reuse the saved engine when its record matches (ONNX md5,
          precision, profile, TensorRT version, GPU, calibration cache), else build it from
          the dynamic-batch ONNX; time it with trtexec; parse; store the shared PerfRecord in
          <run>/perf/tensorrt-<precision>.json (trtexec's full logs beside, in a folder).
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

from ..backends.base import Backend
from ..constants import DEFAULT_BATCH_SIZES, SPLITS
from ..errors import PcbError
from ..fileio import atomic_write_text, file_md5
from ..infer import (
    _previous_record,
    infer_record_path,
    infer_recorded,
    pending_dumps,
    perf_table,
    read_stems,
    require_model,
)
from ..layout import RunLayout
from ..perf import PerfRecord, write_perf_records
from ..provenance import host_name, stamp, utc_now
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
from .names import BACKEND, SCOPE, TOOL, dump_backend, platform_name
from .tools import Completed, Runner, gpu_name, resolve_trtexec, run_command, tensorrt_version
from .trtexec import (
    LAST_SUPPORTED_MAJOR,
    TRTEXEC,
    TimingOptions,
    build_command,
    join,
    load_command,
    validate_precision,
)
from .trtexec_output import (
    DEFAULT_TOLERANCE,
    cross_check,
    parse_device,
    parse_trtexec_output,
    parse_version,
    tail,
    version_major,
)


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
    """What every trtexec call of a stage shares, probed once."""

    trtexec: str
    tensorrt_version: str
    gpu: str
    runner: Runner

    @classmethod
    def probe(cls, trtexec: str, device: int, runner: Runner) -> Toolchain:
        path = resolve_trtexec(trtexec)
        version = tensorrt_version(path, runner)
        major = version_major(version)
        if major is not None and major > LAST_SUPPORTED_MAJOR:
            raise PcbError(
                f"TensorRT {version} has no --fp16/--int8/--calib flags (removed in TensorRT "
                "11): build the tensorrt image on a TensorRT 10 base, e.g. "
                "`invoke build --image tensorrt --base-image nvcr.io/nvidia/tensorrt:24.05-py3`"
            )
        return cls(path, version, gpu_name(device, runner), runner)


@dataclass(frozen=True)
class EngineRun:
    engine: Path
    spec: EngineSpec
    reused: bool
    reason: str  # why it was (re)built, or "cached"
    command: tuple[str, ...]
    output: str  # trtexec's output; "" when a reused engine was not run (build only)


def _run(tools: Toolchain, argv: list[str], log: Path) -> Completed:
    start = time.perf_counter()
    result = tools.runner(argv)
    seconds = time.perf_counter() - start
    # The whole log is kept whatever happened: it is the evidence behind every figure.
    header = f"# {join(argv)}\n# exit status {result.returncode}, {seconds:.1f} s\n"
    atomic_write_text(log, header + result.output)
    return result


def _failed(argv: list[str], result: Completed, log: Path) -> PcbError:
    return PcbError(
        f"trtexec failed with exit status {result.returncode}; its last lines:\n"
        f"{tail(result.output)}\nfull log: {log}\ncommand: {join(argv)}"
    )


def run_engine(
    layout: RunLayout,
    spec: EngineSpec,
    tools: Toolchain,
    log: Path,
    *,
    device: int = 0,
    timing: TimingOptions | None = None,
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
        argv = load_command(engine, batch, device=device, timing=timing, trtexec=tools.trtexec)
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
        calib_cache=calib,
        device=device,
        timing=timing,
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
    trtexec: str = TRTEXEC,
    runner: Runner = run_command,
    quiet: bool = False,
) -> list[PerfRecord]:
    """trtexec at every batch size; writes `<run>/perf/tensorrt-<precision>.json`.

    images/s = 1000 x batch / mean GPU compute ms (the guide's formula), cross-checked against
    trtexec's Throughput x batch: a disagreement beyond `tolerance` is a warning (an error with
    `strict`, raised once every batch size is measured and written).
    """
    precision = validate_precision(precision)
    sizes = _check_batches(batch_sizes)
    device = _check_device(device)
    onnx = require_model(layout)
    onnx_md5 = file_md5(onnx)
    tools = Toolchain.probe(trtexec, device, runner)
    timing = timing or TimingOptions()
    logs = perf_log_dir(layout, precision)
    records: list[PerfRecord] = []
    warnings: list[str] = []
    for batch in tqdm(sizes, desc=f"trtexec {precision}", unit="batch", disable=quiet):
        spec = _spec(layout, onnx_md5, precision, batch, tools)
        run = run_engine(
            layout,
            spec,
            tools,
            logs / f"trtexec_bs{batch}.log",
            device=device,
            timing=timing,
            rebuild=rebuild,
        )
        result = parse_trtexec_output(run.output)
        check = cross_check(result, batch, tolerance)
        gpu = result.device or (tools.gpu if tools.gpu != UNKNOWN else "")
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
            extra={
                "precision": precision,
                "formula": "1000 x batch / mean GPU compute ms",
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
            },
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
            "throughput cross-check failed (--strict): "
            + " | ".join(warnings)
            + f". The records are written to {path} with the disagreement noted"
        )
    return records


# ---- trt-infer -------------------------------------------------------------------------------


BackendFactory = Callable[[int], Backend]


def _tensorrt_backend(device: int) -> Backend:
    from .trt_backend import TensorRTBackend

    return TensorRTBackend(device)


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
    backend: Backend | None = None
    counts: dict[str, int] = {}
    for split, stems in stems_by_split.items():
        record_path = infer_record_path(layout, name, split)
        previous = _previous_record(record_path)
        stale = (
            previous.get("engine_key", key) != key
            or previous.get("model_md5", onnx_md5) != onnx_md5
        )
        if stale:
            # Deleted, not overwritten: an interrupted redo leaves no old dump passing for new.
            if not quiet:
                print(f"{split}: engine or model changed since the last run, recomputing dumps")
            for old in layout.dumps_dir(name, split).glob("*.bin"):
                old.unlink()
        # Kept only while each dump has its recorded digest and its bin is unchanged.
        pending = pending_dumps(layout, name, split, stems, onnx_md5, quiet)
        counts[split] = len(stems)
        if not pending and previous.get("complete") and not stale:
            if not quiet:
                print(f"{split}: all {len(stems)} dumps already complete")
            continue
        if pending and backend is None:
            backend = backend_factory(device)
            backend.load(run.engine, batch_size)
        record: dict[str, Any] = {
            "backend": name,
            "backend_version": backend.version() if backend else tools.tensorrt_version,
            "split": split,
            "model": str(onnx),
            "model_md5": onnx_md5,
            "engine": str(run.engine),
            "engine_key": key,
            "precision": precision,
            "device": (read_record(run.engine) or {}).get("device") or tools.gpu,
            "cuda_device": device,
            "batch_size": batch_size,
            "count": len(stems),
            "inferred": len(pending),
            "reused": len(stems) - len(pending),
            "complete": False,
            "started": utc_now(),
            "host": host_name(),
        }
        infer_recorded(backend, layout, name, split, pending, batch_size, quiet, record)
        if not quiet:
            print(f"{split}: {len(stems)} dumps in {layout.dumps_dir(name, split)}")
    if not quiet:
        print(f"evaluate them with: python -m pcb evaluate --run {layout.root} --backend {name}")
    return counts
