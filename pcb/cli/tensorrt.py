"""The TensorRT sub-commands: trt-calibrate, trt-perf, trt-infer.

`register(stages)` adds them to `python -m pcb`'s sub-parsers (pcb/cli.py calls it), so the
tensorrt image runs them as `python -m pcb trt-perf ...`; `python -m pcb.tensorrt <command>`
runs the same parsers on their own. Thin: each command parses, then calls one stage function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..constants import DEFAULT_BATCH_SIZES
from ..errors import PcbError
from ..layout import RunLayout
from ..tensorrt.engine_cache import CALIBRATION_BATCH, CALIBRATION_IMAGES
from ..tensorrt.trtexec import DEFAULT_PRECISION, PRECISIONS, TRTEXEC, TimingOptions
from ..tensorrt.trtexec_output import DEFAULT_TOLERANCE
from .main import non_negative_int, parse_batch_sizes, positive_int

COMMANDS = ("trt-calibrate", "trt-perf", "trt-infer")


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def cmd_trt_calibrate(args: argparse.Namespace) -> None:
    from ..tensorrt.calibration import build_calibration_cache

    build_calibration_cache(
        RunLayout(args.run),
        images=args.images,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
        quiet=args.quiet,
    )


def cmd_trt_perf(args: argparse.Namespace) -> None:
    from ..tensorrt.stages import run_trt_perf

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


def cmd_trt_infer(args: argparse.Namespace) -> None:
    from ..tensorrt.stages import run_trt_infer

    run_trt_infer(
        RunLayout(args.run),
        precision=args.precision,
        batch_size=args.batch_size,
        device=args.device,
        trtexec=args.trtexec,
        quiet=args.quiet,
    )


def _common(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    parser.add_argument(
        "--run", type=Path, required=True, help="run folder, e.g. results/market (exported)"
    )
    if precision:
        parser.add_argument(
            "--precision",
            choices=PRECISIONS,
            default=DEFAULT_PRECISION,
            help="engine precision: fp16 (the guide's, default), fp32, int8 (after trt-calibrate)",
        )
    parser.add_argument(
        "--device",
        type=non_negative_int,
        default=0,
        help="CUDA device index as this process sees it (0 in a container: the first GPU given)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _trtexec(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trtexec", default=TRTEXEC, help="the trtexec program (default: the one on the PATH)"
    )


def register(stages: Any) -> None:
    """Add the TensorRT sub-commands to an argparse sub-parsers object."""
    calibrate = stages.add_parser(
        "trt-calibrate",
        help="int8 calibration cache from the preprocessed bins (TensorRT Python API)",
    )
    _common(calibrate, precision=False)
    calibrate.add_argument(
        "--images",
        type=positive_int,
        default=CALIBRATION_IMAGES,
        help=f"images to calibrate with, spread over gallery and query (default "
        f"{CALIBRATION_IMAGES})",
    )
    calibrate.add_argument(
        "--batch-size", type=positive_int, default=CALIBRATION_BATCH, help="calibration batch"
    )
    calibrate.add_argument("--force", action="store_true", help="recalibrate even when current")
    calibrate.set_defaults(func=cmd_trt_calibrate)

    perf = stages.add_parser(
        "trt-perf", help="trtexec throughput per batch size (engines saved and reused)"
    )
    _common(perf)
    perf.add_argument(
        "--batch-sizes",
        type=parse_batch_sizes,
        default=list(DEFAULT_BATCH_SIZES),
        help="comma-separated, default 1,4,8,16,32,64",
    )
    perf.add_argument(
        "--warmup-ms", type=non_negative_int, default=None, help="trtexec --warmUp (200)"
    )
    perf.add_argument(
        "--duration", type=non_negative_int, default=None, help="trtexec --duration in s (3)"
    )
    perf.add_argument(
        "--iterations", type=non_negative_int, default=None, help="trtexec --iterations (10)"
    )
    perf.add_argument(
        "--threads", action="store_true", help="trtexec --threads, as the guide passed it"
    )
    perf.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=DEFAULT_TOLERANCE,
        help="allowed relative gap between 1000 x batch / mean GPU ms and qps x batch (0.10)",
    )
    perf.add_argument(
        "--strict",
        action="store_true",
        help="fail when the gap exceeds the tolerance, or trtexec's JSON and text disagree",
    )
    perf.add_argument(
        "--profile",
        action="store_true",
        help="also export trtexec's per-layer profile (a separate profiling run, TensorRT 7.2+)",
    )
    perf.add_argument(
        "--workspace-mib",
        type=positive_int,
        default=None,
        help="cap the builder's workspace (--workspace before TensorRT 8.4, --memPoolSize from)",
    )
    perf.add_argument("--rebuild", action="store_true", help="ignore saved engines")
    _trtexec(perf)
    perf.set_defaults(func=cmd_trt_perf)

    infer = stages.add_parser(
        "trt-infer", help="bins -> feature dumps through the TensorRT engine, on the GPU"
    )
    _common(infer)
    infer.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        help="images per batch; the engine of this batch size is used (built when missing)",
    )
    _trtexec(infer)
    infer.set_defaults(func=cmd_trt_infer)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pcb.tensorrt", description="PCB on NVIDIA GPUs with TensorRT."
    )
    register(parser.add_subparsers(dest="stage", required=True, metavar="STAGE"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .main import dispatch

    args = build_parser().parse_args(argv)
    try:
        # Locked and recorded in the run's manifest, as `python -m pcb trt-...` is.
        dispatch(args, argv)
    except PcbError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
