"""The pipeline's stages as StageCalls, in order, from Settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .settings import DEMO_DIR, Settings
from .stage import StageCall

if TYPE_CHECKING:
    from ..tensorrt.plan import TrtPlan

STAGES = ("demo-data", "export", "preprocess", "infer", "evaluate", "perf", "report")


def _join(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def _quiet(settings: Settings) -> tuple[str, ...]:
    return ("--quiet",) if settings.quiet else ()


def stage_call(stage: str, settings: Settings) -> StageCall:
    run = settings.run_dir
    if stage == "demo-data":
        # The export image: writing the demo checkpoint needs torch.
        return StageCall(
            stage,
            "export",
            (
                "--out",
                DEMO_DIR,
                "--seed",
                str(settings.demo_seed),
                "--identities",
                str(settings.demo_identities),
            ),
            writes_data=True,
        )
    if stage == "export":
        args: tuple = ("--checkpoint", settings.checkpoint, "--run", run)
        if settings.static_batch_sizes:
            args += ("--static-batch-sizes", _join(settings.static_batch_sizes))
        return StageCall(stage, "export", args)
    if stage == "preprocess":
        return StageCall(
            stage,
            "runtime",
            (
                "--dataset",
                settings.dataset,
                "--run",
                run,
                "--workers",
                str(settings.workers),
                *_quiet(settings),
            ),
        )
    if stage == "infer":
        return StageCall(
            stage,
            "runtime",
            (
                "--run",
                run,
                "--backend",
                settings.backend,
                "--batch-size",
                str(settings.infer_batch_size),
                "--threads",
                str(settings.threads),
                *_quiet(settings),
            ),
        )
    if stage == "evaluate":
        return StageCall(
            stage,
            "runtime",
            ("--dataset", settings.dataset, "--run", run, "--backend", settings.backend),
        )
    if stage == "perf":
        return StageCall(
            stage,
            "runtime",
            (
                "--run",
                run,
                "--backend",
                settings.backend,
                "--batch-sizes",
                _join(settings.batch_sizes),
                "--warmup",
                str(settings.perf_warmup),
                "--iterations",
                str(settings.perf_iterations),
                "--threads",
                str(settings.threads),
                *_quiet(settings),
            ),
        )
    if stage == "report":
        return report_call(settings)
    from .ascend_stages import ASCEND_STAGES, ascend_stage_call

    if stage in ASCEND_STAGES[:2]:  # convert, parity; import-results needs its folder
        return ascend_stage_call(stage, settings)
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def report_call(
    settings: Settings,
    runs: tuple[str, ...] = (),
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


def int8_calls(settings: Settings) -> list[StageCall]:
    """The CPU INT8 platform beside fp32: quantize (in the export image, which has onnx), then
    infer, evaluate, parity against the fp32 features, and perf at int8."""
    from .ascend_stages import parity_call

    run, quiet = settings.run_dir, _quiet(settings)
    int8 = ("--precision", "int8")
    infer, perf = stage_call("infer", settings), stage_call("perf", settings)
    return [
        StageCall("quantize", "export", ("--run", run, *quiet)),
        StageCall("infer", "runtime", (*infer.args, *int8)),
        StageCall(
            "evaluate",
            "runtime",
            ("--dataset", settings.dataset, "--run", run, "--backend", INT8_BACKEND),
        ),
        parity_call(settings, INT8_BACKEND),
        StageCall("perf", "runtime", (*perf.args, *int8)),
    ]


INT8_BACKEND = "onnxruntime-int8"


def full_pipeline(settings: Settings) -> list[StageCall]:
    """Every stage `invoke full` runs; demo-data only for a demo run; with a chip, the Ascend
    stages too (ascend_stages.ascend_pipeline); with trt, the TensorRT stages too (the GPU
    stages right after preprocess, parity against onnxruntime before the report)."""
    if settings.chip:
        from .ascend_stages import ascend_pipeline

        calls = ascend_pipeline(settings)
    else:
        stages = STAGES if settings.demo else STAGES[1:]
        calls = [stage_call(stage, settings) for stage in stages]
    if settings.int8:
        # Before the report, which then shows the int8 column beside fp32.
        calls = [*calls[:-1], *int8_calls(settings), calls[-1]]
    if settings.trt:
        from ..tensorrt.plan import insert_trt

        calls = insert_trt(calls, trt_pipeline(settings))
    return calls


def trt_plan(settings: Settings, parity: bool = True) -> TrtPlan:
    """The TensorRT stages of the run (docs/tensorrt.md): [trt-calibrate,] trt-perf, trt-infer,
    evaluate, [parity against onnxruntime]."""
    from ..tensorrt.plan import TrtPlan

    return TrtPlan(
        run=settings.run_dir,
        dataset=settings.dataset,
        precision=settings.trt_precision,
        batch_sizes=settings.trt_batch_sizes or settings.batch_sizes,
        infer_batch_size=settings.infer_batch_size,
        gpus=settings.gpus,
        executor=settings.executor,
        calib_images=settings.trt_calib_images,
        parity=parity,
        parity_threshold=settings.parity_threshold,
        quiet=settings.quiet,
        trt_image=settings.trt_image,
    )


def trt_pipeline(settings: Settings, parity: bool = True) -> list[StageCall]:
    return trt_plan(settings, parity).calls()
