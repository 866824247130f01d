"""The stage commands: each takes the parsed arguments and calls one library function.

Imports happen inside each command, so that an image runs its stages without the libraries of
the others (the cann image has no torch, the runtime image no TensorRT).
"""

from __future__ import annotations

import argparse
from typing import Callable

from ..errors import PcbError
from ..layout import RunLayout


def _require_chip(args: argparse.Namespace) -> str:
    if not args.chip:
        raise PcbError(f"--backend {args.backend} needs the chip: add --chip 310P3 (or auto)")
    return args.chip


def demo_data(args: argparse.Namespace) -> None:
    from ..demo import write_demo

    paths = write_demo(args.out, seed=args.seed, identities=args.identities)
    print(f"demo dataset:    {paths.dataset_root}")
    print(f"demo checkpoint: {paths.checkpoint}")
    print("(synthetic images and untrained weights: numbers from them are not comparable)")


def export(args: argparse.Namespace) -> None:
    from ..export import export_onnx

    export_onnx(
        args.checkpoint,
        RunLayout(args.run),
        static_batch_sizes=args.static_batch_sizes or [],
        opset=args.opset,
        force=args.force,
    )


def preprocess(args: argparse.Namespace) -> None:
    from ..preprocess import preprocess_dataset

    # It prints what it found and used per split.
    preprocess_dataset(
        args.dataset,
        RunLayout(args.run),
        workers=args.workers,
        quiet=args.quiet,
        skip_bad_images=args.skip_bad_images,
    )


def infer(args: argparse.Namespace) -> None:
    if args.backend == "ais_bench":
        from ..ascend.npu_infer import ais_infer

        ais_infer(
            RunLayout(args.run),
            _require_chip(args),
            batch_size=args.batch_size,
            device=args.device,
            aoe=args.aoe,
            dynamic=args.dynamic,
            quiet=args.quiet,
        )
        return
    from ..infer import run_inference

    run_inference(
        RunLayout(args.run),
        backend=args.backend,
        batch_size=args.batch_size,
        threads=args.threads,
        quiet=args.quiet,
    )


def evaluate(args: argparse.Namespace) -> None:
    from ..evaluate import evaluate_run

    evaluate_run(args.dataset, RunLayout(args.run), backend=args.backend, dumps=args.dumps)


def perf(args: argparse.Namespace) -> None:
    if args.backend == "ais_bench":
        from ..ascend.npu_perf import ais_perf

        ais_perf(
            RunLayout(args.run),
            _require_chip(args),
            args.batch_sizes,
            devices=args.devices,
            iterations=args.iterations,
            warmup=args.warmup,
            aoe=args.aoe,
            dynamic=args.dynamic,
            quiet=args.quiet,
        )
        return
    from ..infer import run_perf

    run_perf(
        RunLayout(args.run),
        backend=args.backend,
        batch_sizes=args.batch_sizes,
        warmup=args.warmup,
        iterations=args.iterations,
        threads=args.threads,
        quiet=args.quiet,
        force=args.force,
    )


def quantize(args: argparse.Namespace) -> None:
    from ..quantize import ensure_quantized

    ensure_quantized(
        RunLayout(args.run),
        calibration_images=args.calibration_images,
        force=args.force,
        quiet=args.quiet,
    )


def convert(args: argparse.Namespace) -> None:
    from ..ascend.convert import convert_models
    from ..ascend.npu_smi import resolve_chip

    convert_models(
        RunLayout(args.run),
        resolve_chip(args.chip, [args.device]),
        args.batch_sizes,
        dynamic=args.dynamic,
        aoe=args.aoe,
        device=args.device,
        force=args.force,
        quiet=args.quiet,
    )


def parity(args: argparse.Namespace) -> None:
    from ..parity import run_parity

    run_parity(
        RunLayout(args.run),
        args.backend,
        reference=args.reference,
        threshold=args.threshold,
        dumps=args.dumps,
    )


def import_results(args: argparse.Namespace) -> None:
    from ..ascend.import_results import import_results

    import_results(
        args.source,
        RunLayout(args.run),
        chip=args.chip,
        batch_size=args.batch_size,
        chips_per_card=args.chips_per_card,
    )


def report(args: argparse.Namespace) -> None:
    from ..report.comparison import write_comparison

    write_comparison(
        args.run,
        out=args.out,
        show=args.show,
        ratios=args.ratios,
        force=args.force,
        plots=not args.no_plots,
    )


def verify(args: argparse.Namespace) -> None:
    from ..record.verify import run_verify

    run_verify(args.run, quiet=args.quiet)


def trt_calibrate(args: argparse.Namespace) -> None:
    from ..tensorrt.calibration import build_calibration_cache

    build_calibration_cache(
        RunLayout(args.run),
        images=args.images,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
        quiet=args.quiet,
    )


def trt_perf(args: argparse.Namespace) -> None:
    from ..tensorrt.stages import run_trt_perf
    from ..tensorrt.trtexec import TimingOptions

    run_trt_perf(
        RunLayout(args.run),
        precision=args.precision,
        batch_sizes=args.batch_sizes,
        device=args.device,
        timing=TimingOptions(
            warmup_ms=args.warmup_ms,
            duration_s=args.duration,
            iterations=args.iterations,
            threads=args.threads,
        ),
        tolerance=args.tolerance,
        strict=args.strict,
        rebuild=args.rebuild,
        profile=args.profile,
        workspace_mib=args.workspace_mib,
        trtexec=args.trtexec,
        quiet=args.quiet,
    )


def trt_infer(args: argparse.Namespace) -> None:
    from ..tensorrt.stages import run_trt_infer

    run_trt_infer(
        RunLayout(args.run),
        precision=args.precision,
        batch_size=args.batch_size,
        device=args.device,
        trtexec=args.trtexec,
        quiet=args.quiet,
    )


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
