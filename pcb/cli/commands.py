"""The stage commands: each takes the parsed arguments and calls one library function.

Imports happen inside each command, so that an image runs its stages without the libraries of
the others (the cann image has no torch, the runtime image no TensorRT).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..errors import PcbError
from ..layout import RunLayout


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The parsed options of these names, as the library function's keywords of the same
    names."""
    return {name: getattr(args, name) for name in names}


def _require_chip(args: argparse.Namespace) -> str:
    if not args.chip:
        raise PcbError(f"--backend {args.backend} needs the chip: add --chip 310P3 (or auto)")
    return args.chip


def demo_data(args: argparse.Namespace) -> None:
    from ..demo import write_demo

    paths = write_demo(args.out, **_given(args, "seed", "identities"))
    print(f"demo dataset:    {paths.dataset_root}")
    print(f"demo checkpoint: {paths.checkpoint}")
    print("(synthetic images and untrained weights: numbers from them are not comparable)")


def export(args: argparse.Namespace) -> None:
    from ..export import export_onnx

    static = args.static_batch_sizes or []
    layout = RunLayout(args.run)
    export_onnx(
        args.checkpoint, layout, static_batch_sizes=static, **_given(args, "opset", "force")
    )


def preprocess(args: argparse.Namespace) -> None:
    from ..preprocess import preprocess_dataset

    # It prints what it found and used per split.
    options = _given(args, "workers", "quiet", "skip_bad_images")
    preprocess_dataset(args.dataset, RunLayout(args.run), **options)


def infer(args: argparse.Namespace) -> None:
    if args.backend == "ais_bench":
        from ..ascend.npu_infer import ais_infer

        options = _given(args, "batch_size", "device", "aoe", "dynamic", "quiet")
        ais_infer(RunLayout(args.run), _require_chip(args), **options)
        return
    from ..infer import run_inference

    options = _given(args, "backend", "batch_size", "threads", "quiet")
    run_inference(RunLayout(args.run), **options)


def evaluate(args: argparse.Namespace) -> None:
    from ..evaluate import evaluate_run

    evaluate_run(
        args.dataset, RunLayout(args.run), **_given(args, "backend", "dumps", "quiet", "ap_ties")
    )


def perf(args: argparse.Namespace) -> None:
    if args.backend == "ais_bench":
        from ..ascend.npu_perf import ais_perf

        options = _given(args, "devices", "iterations", "warmup", "aoe", "dynamic", "quiet")
        ais_perf(RunLayout(args.run), _require_chip(args), args.batch_sizes, **options)
        return
    if args.timer == "loadgen":
        from ..measure.loadgen_harness import LoadGenRules
        from ..measure.perf_loadgen import MeasureSettings, run_perf_loadgen

        rules = LoadGenRules(round(1000 * args.min_duration), args.min_queries, name="perf")
        measure = MeasureSettings(rules, warmup=args.warmup, repeats=args.repeats)
        options = _given(args, "backend", "batch_sizes", "threads", "quiet", "force")
        run_perf_loadgen(RunLayout(args.run), settings=measure, **options)
        return
    from ..infer import run_perf

    options = _given(args, "backend", "batch_sizes", "warmup", "iterations", "threads")
    run_perf(RunLayout(args.run), **options, **_given(args, "quiet", "force"))


def quantize(args: argparse.Namespace) -> None:
    from ..quantize import ensure_quantized

    options = _given(args, "calibration_images", "force", "quiet")
    ensure_quantized(RunLayout(args.run), **options)


def convert(args: argparse.Namespace) -> None:
    from ..ascend.convert import convert_models
    from ..ascend.npu_smi import resolve_chip

    chip = resolve_chip(args.chip, [args.device])
    options = _given(args, "dynamic", "aoe", "device", "force", "quiet")
    convert_models(RunLayout(args.run), chip, args.batch_sizes, **options)


def parity(args: argparse.Namespace) -> None:
    from ..parity import run_parity

    options = _given(args, "reference", "threshold", "dumps")
    run_parity(RunLayout(args.run), args.backend, **options)


def import_results(args: argparse.Namespace) -> None:
    from ..ascend.import_results import import_results

    options = _given(args, "chip", "batch_size", "chips_per_card")
    import_results(args.source, RunLayout(args.run), **options)


def report(args: argparse.Namespace) -> None:
    from ..report.comparison import write_comparison

    options = _given(args, "out", "show", "ratios", "force")
    write_comparison(args.run, plots=not args.no_plots, **options)


def verify(args: argparse.Namespace) -> None:
    from ..record.verify import run_verify

    run_verify(args.run, quiet=args.quiet)


def trt_calibrate(args: argparse.Namespace) -> None:
    from ..tensorrt.calibration import build_calibration_cache

    options = _given(args, "images", "batch_size", "device", "force", "quiet")
    build_calibration_cache(RunLayout(args.run), **options)


def trt_perf(args: argparse.Namespace) -> None:
    from ..tensorrt.stages import run_trt_perf
    from ..tensorrt.trtexec import TimingOptions

    timing = TimingOptions(
        warmup_ms=args.warmup_ms,
        duration_s=args.duration,
        iterations=args.iterations,
        threads=args.threads,
    )
    options = _given(args, "precision", "batch_sizes", "device", "tolerance", "strict")
    options.update(_given(args, "rebuild", "profile", "workspace_mib", "trtexec", "quiet"))
    run_trt_perf(RunLayout(args.run), timing=timing, **options)


def trt_infer(args: argparse.Namespace) -> None:
    from ..tensorrt.stages import run_trt_infer

    options = _given(args, "precision", "batch_size", "device", "trtexec", "quiet")
    run_trt_infer(RunLayout(args.run), **options)


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "demo-data": demo_data,
    "export": export,
    "preprocess": preprocess,
    "infer": infer,
    "evaluate": evaluate,
    "perf": perf,
    "quantize": quantize,
    "convert": convert,
    "parity": parity,
    "import-results": import_results,
    "report": report,
    "verify": verify,
    "trt-calibrate": trt_calibrate,
    "trt-perf": trt_perf,
    "trt-infer": trt_infer,
}
