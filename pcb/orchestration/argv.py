"""Every stage's command line, written in one place: the StageCall of each stage, from the
settings (invoke.yaml's `pcb:` with the task's options on top).

One function per stage, whatever the platform: the CPU, Ascend (the cann image, NPU devices)
and TensorRT (the tensorrt image, GPUs) variants of a stage are branches of the same function.
The pipelines (pipeline.py) order these calls; a single-stage task takes one, with the options
given on its command line (`stage_call`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from ..ascend.chips import AUTO, backend_key
from ..cli.options import stage_option
from ..constants import REFERENCE_BACKEND, TORCH_BACKENDS
from ..errors import PcbError
from ..tensorrt.engine_cache import CALIBRATION_BATCH
from ..tensorrt.names import dump_backend
from .gpus import cuda_device, parse_gpus
from .settings import DEMO_DIR, Settings
from .stage import StageCall, join_ints, with_options

NPU_BACKEND = "ais_bench"
INT8_BACKEND = f"{REFERENCE_BACKEND}-int8"


def _quiet(settings: Settings) -> tuple[str, ...]:
    return ("--quiet",) if settings.quiet else ()


def _variant(aoe: bool, dynamic: bool) -> tuple[str, ...]:
    return (("--aoe",) if aoe else ()) + (("--dynamic",) if dynamic else ())


def require_chip(settings: Settings) -> str:
    if not settings.chip:
        raise PcbError("no Ascend chip chosen: pass --chip 310P3 (or 310, 310B1, ..., auto)")
    if settings.chip == AUTO:
        raise PcbError(
            "--chip auto is read from `npu-smi info` before the stages are planned "
            "(pcb.orchestration.preflight.resolve_auto_chip); pass the chip by name, e.g. "
            "--chip 310P3"
        )
    return settings.chip


def npu_backend(settings: Settings, aoe: bool = False) -> str:
    """The name the NPU's dumps and records go under, e.g. Ascend310P3-ais_bench."""
    return backend_key(require_chip(settings), NPU_BACKEND, aoe, settings.dynamic)


# ---- the CPU stages --------------------------------------------------------------------------


def demo_data_call(settings: Settings) -> StageCall:
    # The export image: writing the demo checkpoint needs torch.
    args = ("--out", DEMO_DIR, "--seed", str(settings.demo_seed))
    args += ("--identities", str(settings.demo_identities))
    return StageCall("demo-data", "export", args, writes_data=True)


def export_call(settings: Settings) -> StageCall:
    args: tuple = ("--checkpoint", settings.checkpoint, "--run", settings.run_dir)
    if settings.static_batch_sizes:
        args += ("--static-batch-sizes", join_ints(settings.static_batch_sizes))
    return StageCall("export", "export", args)


def preprocess_call(settings: Settings) -> StageCall:
    args = ("--dataset", settings.dataset, "--run", settings.run_dir)
    args += ("--workers", str(settings.workers), *_quiet(settings))
    return StageCall("preprocess", "runtime", args)


def _cpu_image(backend: str) -> str:
    """The image of an in-process backend: PyTorch is in the export image only."""
    return "export" if backend in TORCH_BACKENDS else "runtime"


def infer_call(
    settings: Settings, backend: str | None = None, aoe: bool | None = None, int8: bool = False
) -> StageCall:
    """onnxruntime on the CPU (`int8`: its INT8 model), or ais_bench on the first NPU device
    (`aoe`: the AOE-tuned model; default: the setting)."""
    backend = backend or settings.backend
    run = settings.run_dir
    if backend == NPU_BACKEND:
        device = settings.devices[0]
        args: tuple = ("--run", run, "--backend", backend, "--chip", require_chip(settings))
        args += ("--batch-size", str(settings.infer_batch_size), "--device", str(device))
        aoe = settings.aoe if aoe is None else aoe
        args += (*_variant(aoe, settings.dynamic), *_quiet(settings))
        return StageCall("infer", "cann", args, npu_devices=(device,))
    args = ("--run", run, "--backend", backend, "--batch-size", str(settings.infer_batch_size))
    args += ("--threads", str(settings.threads), *_quiet(settings))
    if int8:
        args += ("--precision", "int8")
    return StageCall("infer", _cpu_image(backend), args)


def evaluate_call(settings: Settings, backend: str | None = None) -> StageCall:
    """The evaluation of `backend`'s dumps (default: the setting's backend)."""
    backend = backend or settings.backend
    args = ("--dataset", settings.dataset, "--run", settings.run_dir, "--backend", backend)
    ties = ("--ap-ties", settings.ap_ties) if settings.ap_ties != "ranked" else ()
    return StageCall("evaluate", "runtime", (*args, *ties, *_quiet(settings)))


def perf_call(
    settings: Settings, backend: str | None = None, aoe: bool | None = None, int8: bool = False
) -> StageCall:
    """onnxruntime throughput (perf_warmup; LoadGen's run rules, or perf_iterations with the
    fixed timer), or ais_bench's on every NPU device at once (npu_warmup, npu_loop)."""
    backend = backend or settings.backend
    run, sizes = settings.run_dir, join_ints(settings.batch_sizes)
    if backend == NPU_BACKEND:
        args: tuple = ("--run", run, "--backend", backend, "--chip", require_chip(settings))
        args += ("--batch-sizes", sizes, "--devices", join_ints(settings.devices))
        args += ("--iterations", str(settings.npu_loop), "--warmup", str(settings.npu_warmup))
        aoe = settings.aoe if aoe is None else aoe
        args += (*_variant(aoe, settings.dynamic), *_quiet(settings))
        return StageCall("perf", "cann", args, npu_devices=settings.devices)
    args = ("--run", run, "--backend", backend, "--batch-sizes", sizes)
    args += ("--warmup", str(settings.perf_warmup), "--timer", settings.perf_timer)
    if settings.perf_timer == "fixed":
        args += ("--iterations", str(settings.perf_iterations))
    else:
        args += ("--min-duration", f"{settings.perf_min_duration:g}")
        args += ("--min-queries", str(settings.perf_min_queries))
        args += ("--repeats", str(settings.perf_repeats))
    args += ("--threads", str(settings.threads), *_quiet(settings))
    if int8:
        args += ("--precision", "int8")
    return StageCall("perf", _cpu_image(backend), args)


def quantize_call(settings: Settings) -> StageCall:
    # The export image: quantising needs onnx, which the runtime image lacks.
    return StageCall("quantize", "export", ("--run", settings.run_dir, *_quiet(settings)))


def parity_call(settings: Settings, backend: str) -> StageCall:
    args = ("--run", settings.run_dir, "--backend", backend, "--reference", REFERENCE_BACKEND)
    args += ("--threshold", f"{settings.parity_threshold:g}")
    return StageCall("parity", "runtime", args)


def report_call(
    settings: Settings,
    runs: Sequence[str] = (),
    out: str | None = None,
    show: str | None = None,
    ratios: str | None = None,
    force: bool = False,
    plots: bool = True,
) -> StageCall:
    """The report over one or more runs: names under results/ or folder paths."""
    folders = [_run_folder(settings, run) for run in runs] or [settings.run_dir]
    args: list = []
    for folder in folders:
        args += ["--run", folder]
    if out is None and len(folders) > 1:
        # Given explicitly so that it lands under results/, which the container mounts.
        out = str(settings.results_dir / "comparison")
    if out is not None:
        args += ["--out", Path(out)]
    if show:
        args += ["--show", show]
    if ratios:
        args += ["--ratios", ratios]
    if force:
        args.append("--force")
    if not plots:
        args.append("--no-plots")
    return StageCall("report", "runtime", tuple(args))


def _run_folder(settings: Settings, run: str) -> Path:
    path = Path(run)
    return path if len(path.parts) > 1 or path.is_absolute() else settings.results_dir / run


def verify_call(settings: Settings) -> StageCall:
    return StageCall("verify", "runtime", ("--run", settings.run_dir, *_quiet(settings)))


# ---- Ascend ----------------------------------------------------------------------------------


def convert_batch_sizes(settings: Settings) -> list[int]:
    """Every batch size a later stage loads a model for: the perf ones and the infer one."""
    return sorted({*settings.batch_sizes, settings.infer_batch_size})


def convert_call(settings: Settings, batch_sizes: Sequence[int] | None = None) -> StageCall:
    """atc (and AOE) for `batch_sizes`, by default every batch size the pipeline loads."""
    sizes = join_ints(batch_sizes or convert_batch_sizes(settings))
    args: tuple = ("--run", settings.run_dir, "--chip", require_chip(settings))
    args += ("--batch-sizes", sizes, *_variant(settings.aoe, settings.dynamic))
    # atc needs no NPU; AOE tunes by running the operators on one.
    devices: tuple[int, ...] = ()
    if settings.aoe:
        args += ("--device", str(settings.devices[0]))
        devices = (settings.devices[0],)
    return StageCall("convert", "cann", (*args, *_quiet(settings)), npu_devices=devices)


def import_chip(settings: Settings) -> str:
    """The chip of imported results: the one chosen, else the guide's 310."""
    return settings.chip if settings.chip and settings.chip != AUTO else "310"


def import_results_call(
    settings: Settings,
    source: Path,
    batch_size: int | None = None,
    chips_per_card: int | None = None,
) -> StageCall:
    """The old benchmark tool's results (under data/ or results/, which the container sees)."""
    args: tuple = ("--from", Path(source), "--run", settings.run_dir)
    args += ("--chip", import_chip(settings))
    if batch_size is not None:
        args += ("--batch-size", str(batch_size))
    if chips_per_card is not None:
        args += ("--chips-per-card", str(chips_per_card))
    return StageCall("import-results", "runtime", args)


# ---- TensorRT --------------------------------------------------------------------------------
# In a container the chosen GPUs are the only ones it sees, numbered from 0, so the stages run
# on CUDA device 0 (the first chosen); on the host (--local) on the first id given.


def _gpu_call(stage: str, settings: Settings, args: tuple) -> StageCall:
    return StageCall(stage, "tensorrt", (*args, *_quiet(settings)), gpus=parse_gpus(settings.gpus))


def _cuda_device(settings: Settings) -> str:
    return str(cuda_device(parse_gpus(settings.gpus), settings.executor))


def trt_calibrate_call(settings: Settings) -> StageCall:
    args = ("--run", settings.run_dir, "--images", str(settings.trt_calib_images))
    args += ("--batch-size", str(CALIBRATION_BATCH), "--device", _cuda_device(settings))
    return _gpu_call("trt-calibrate", settings, args)


def trt_perf_call(settings: Settings) -> StageCall:
    """trtexec at trt_batch_sizes (default: batch_sizes)."""
    sizes = join_ints(settings.trt_batch_sizes or settings.batch_sizes)
    args = ("--run", settings.run_dir, "--precision", settings.trt_precision)
    args += ("--device", _cuda_device(settings), "--batch-sizes", sizes)
    return _gpu_call("trt-perf", settings, args)


def trt_infer_call(settings: Settings) -> StageCall:
    args = ("--run", settings.run_dir, "--precision", settings.trt_precision)
    args += ("--device", _cuda_device(settings), "--batch-size", str(settings.infer_batch_size))
    return _gpu_call("trt-infer", settings, args)


def trt_backend(settings: Settings) -> str:
    """The name TensorRT's dumps and records go under, e.g. tensorrt-fp16."""
    return dump_backend(settings.trt_precision)


# ---- a stage by name -------------------------------------------------------------------------

WRITERS: dict[str, Callable[[Settings], StageCall]] = {
    "demo-data": demo_data_call,
    "export": export_call,
    "preprocess": preprocess_call,
    "infer": infer_call,
    "evaluate": evaluate_call,
    "perf": perf_call,
    "quantize": quantize_call,
    "convert": convert_call,
    "report": report_call,
    "verify": verify_call,
    "trt-calibrate": trt_calibrate_call,
    "trt-perf": trt_perf_call,
    "trt-infer": trt_infer_call,
}


def stage_call(stage: str, settings: Settings, given: Mapping[str, Any] | None = None) -> StageCall:
    """The call of one stage from the settings, with `given` (the stage's options that have no
    setting, by key, as a task's command line gave them) on top."""
    given = dict(given or {})
    if stage == "parity":
        # The NPU's dumps by default; naming another backend needs no chip.
        call = parity_call(settings, given.pop("backend", None) or npu_backend(settings))
    elif stage in WRITERS:
        call = WRITERS[stage](settings)
    else:
        raise PcbError(f"stage {stage!r} has no call of its own here (import-results: its task)")
    return with_options(call, {stage_option(stage, key): value for key, value in given.items()})
