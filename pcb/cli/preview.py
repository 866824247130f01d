"""What a stage will run, without running it: the vendor tool command lines (atc, aoe,
ais_bench, trtexec) of a `python -m pcb <stage> ...` call, for a dry run. Built by the same
functions the stages use, from the stage's own arguments as this parser reads them, so the
preview cannot drift from what runs."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..ascend.ais_bench import DEFAULT_PROFILE
from ..ascend.chips import AUTO, backend_key
from ..ascend.convert import convert_jobs, om_path
from ..ascend.npu_infer import infer_command
from ..ascend.npu_perf import perf_scratch, timing_commands
from ..ascend.visible import tool_device_ids
from ..constants import SPLITS
from ..layout import RunLayout
from ..tensorrt.engine_cache import calibration_cache_path, engine_path
from ..tensorrt.image_matrix import DEFAULT_KEY, tensorrt_image
from ..tensorrt.stages import profile_path, times_path
from ..tensorrt.trtexec import Exports, TimingOptions, build_command
from .parser import build_parser

# Stands in for the chip `--chip auto` finds at run time, in a plan made before it is known.
PLAN_CHIP = "310P3"
PLAN_NOTE = "(--chip auto: the chip npu-smi names replaces {plan} in these commands)"
PROFILE_NOTE = "(ais_bench options of {name}; a run reads the installed one's first)"


def tool_commands(
    argv: Sequence[str],
    environment: Mapping[str, str] | None = None,
    trt_image: str = DEFAULT_KEY,
) -> list[str]:
    """Every vendor tool command of a stage's argv, with the notes that qualify them; [] for a
    stage that runs none. See ascend_commands and trtexec_commands."""
    return [*ascend_commands(argv, environment), *trtexec_commands(argv, trt_image)]


def ascend_commands(argv: Sequence[str], environment: Mapping[str, str] | None = None) -> list[str]:
    """The vendor tool commands of a stage's argv (container paths); [] for other stages.
    `environment`: the stage's (a container's tells which host devices it was given, so
    ais_bench's device ids are their positions there); None: run on this host as is."""
    args = build_parser().parse_args(list(argv))
    chip = getattr(args, "chip", None)
    backend = getattr(args, "backend", None)
    if args.stage not in ("convert", "infer", "perf") or not chip:
        return []
    if args.stage != "convert" and backend != "ais_bench":
        return []
    note = [PLAN_NOTE.format(plan=PLAN_CHIP)] if chip == AUTO else []
    if args.stage != "convert":
        note.append(PROFILE_NOTE.format(name=DEFAULT_PROFILE.name))
    env = environment if environment is not None else {}
    chip = PLAN_CHIP if chip == AUTO else chip
    layout = RunLayout(Path(args.run))
    commands: list[list[str]] = []
    if args.stage == "convert":
        device = tool_device_ids([args.device], env)[0] if args.aoe else args.device
        jobs = convert_jobs(layout, chip, args.batch_sizes, args.dynamic, args.aoe, device)
        commands = [list(job.command) for job in jobs]
    elif args.stage == "infer":
        key = backend_key(chip, "ais_bench", args.aoe, args.dynamic)
        om = om_path(layout, None if args.dynamic else args.batch_size, args.aoe)
        commands = [
            infer_command(
                layout,
                om,
                key,
                split,
                args.batch_size,
                tool_device_ids([args.device], env)[0],
                args.dynamic,
            )
            for split in SPLITS
        ]
    else:
        key = backend_key(chip, "ais_bench", args.aoe, args.dynamic)
        for batch_size in args.batch_sizes:
            om = om_path(layout, None if args.dynamic else batch_size, args.aoe)
            scratch = perf_scratch(layout, key, batch_size)
            # One multi-device ais_bench, or one per device started together.
            timing = timing_commands(
                om,
                batch_size,
                args.devices,
                tool_device_ids(args.devices, env),
                scratch,
                args.iterations,
                args.warmup,
                args.dynamic,
            )
            commands += [list(command) for _devices, command in timing.commands]
    return note + [shlex.join(command) for command in commands]


def trtexec_commands(argv: Sequence[str], image: str = DEFAULT_KEY) -> list[str]:
    """The trtexec lines a trt-perf / trt-infer argv runs (its paths as it sees them: container
    paths for a container's argv), with the flags of the TensorRT of `image` (image_matrix);
    [] for any other stage. A first run builds each engine as shown; later runs time the saved
    ones (--loadEngine) whose record matches. At run time the flags follow the version
    trtexec itself reports."""
    if not argv or argv[0] not in ("trt-perf", "trt-infer"):
        return []
    trt = tensorrt_image(image)
    args = build_parser().parse_args(list(argv))
    layout = RunLayout(Path(args.run))
    calib = calibration_cache_path(layout) if args.precision == "int8" else None
    perf = args.stage == "trt-perf"
    if perf:
        sizes = list(args.batch_sizes)
        timing = TimingOptions(
            warmup_ms=args.warmup_ms,
            duration_s=args.duration,
            iterations=args.iterations,
            threads=args.threads,
        )
    else:
        sizes, timing = [args.batch_size], None
    lines = []
    for batch in sizes:
        exports = None
        if perf:
            exports = Exports(
                times=times_path(layout, args.precision, batch),
                profile=profile_path(layout, args.precision, batch) if args.profile else None,
            )
        command = build_command(
            layout.onnx_path,
            engine_path(layout, args.precision, batch),
            batch,
            args.precision,
            version=trt.version,
            calib_cache=calib,
            device=args.device,
            timing=timing,
            exports=exports,
            workspace_mib=args.workspace_mib if perf else None,
            skip_inference=not perf,
            trtexec=args.trtexec,
        )
        lines.append(shlex.join(command))
    if perf:
        lines.append("(a saved engine whose record matches is timed with --loadEngine instead)")
    lines.append(
        f"(flags of TensorRT {trt.version}, the {trt.reference} base of trt_image "
        f"{trt.key!r}; the stage reads trtexec's own version first and uses its flags)"
    )
    return lines
