"""What an Ascend stage will run, without running it: the atc / aoe / ais_bench command lines
of a `python -m pcb <stage> ...` call, for a dry run. Built by the same functions the stages
use, from the stage's own arguments, so the plan cannot drift from what runs."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..ascend.ais_bench import DEFAULT_PROFILE
from ..ascend.chips import AUTO, backend_key
from ..ascend.convert import om_path, plan_convert
from ..ascend.npu_infer import infer_command
from ..ascend.npu_perf import perf_scratch, plan_devices
from ..ascend.visible import tool_device_ids
from ..constants import SPLITS
from ..layout import RunLayout

# Stands in for the chip `--chip auto` finds at run time, in a plan made before it is known.
PLAN_CHIP = "310P3"
PLAN_NOTE = "(--chip auto: the chip npu-smi names replaces {plan} in these commands)"
PROFILE_NOTE = "(ais_bench options of {name}; a run reads the installed one's first)"


def tool_commands(argv: Sequence[str], environment: Mapping[str, str] | None = None) -> list[str]:
    """The vendor tool commands of a stage's argv (container paths); [] for other stages.
    `environment`: the stage's (a container's tells which host devices it was given, so
    ais_bench's device ids are their positions there); None: run on this host as is."""
    from .main import build_parser

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
        jobs = plan_convert(layout, chip, args.batch_sizes, args.dynamic, args.aoe, device)
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
            plan = plan_devices(
                om,
                batch_size,
                args.devices,
                tool_device_ids(args.devices, env),
                scratch,
                args.iterations,
                args.warmup,
                args.dynamic,
            )
            commands += [list(command) for _devices, command in plan.commands]
    return note + [shlex.join(command) for command in commands]
