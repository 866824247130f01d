"""What an Ascend stage will run, without running it: the atc / aoe / ais_bench command lines
of a `python -m pcb <stage> ...` call, for a dry run. Built by the same functions the stages
use, from the stage's own arguments, so the plan cannot drift from what runs."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from ..constants import SPLITS
from ..layout import RunLayout
from .chips import AUTO, backend_key
from .convert import om_path, plan_convert
from .npu_infer import infer_command
from .npu_perf import perf_command, perf_scratch

# Stands in for the chip `--chip auto` finds at run time, in a plan made before it is known.
PLAN_CHIP = "310P3"
PLAN_NOTE = "(--chip auto: the chip npu-smi names replaces {plan} in these commands)"


def tool_commands(argv: Sequence[str]) -> list[str]:
    """The vendor tool commands of a stage's argv (container paths); [] for other stages."""
    from ..cli import build_parser

    args = build_parser().parse_args(list(argv))
    chip = getattr(args, "chip", None)
    backend = getattr(args, "backend", None)
    if args.stage not in ("convert", "infer", "perf") or not chip:
        return []
    if args.stage != "convert" and backend != "ais_bench":
        return []
    note = [PLAN_NOTE.format(plan=PLAN_CHIP)] if chip == AUTO else []
    chip = PLAN_CHIP if chip == AUTO else chip
    layout = RunLayout(Path(args.run))
    commands: list[list[str]] = []
    if args.stage == "convert":
        jobs = plan_convert(layout, chip, args.batch_sizes, args.dynamic, args.aoe, args.device)
        commands = [list(job.command) for job in jobs]
    elif args.stage == "infer":
        key = backend_key(chip, "ais_bench", args.aoe, args.dynamic)
        om = om_path(layout, None if args.dynamic else args.batch_size, args.aoe)
        commands = [
            infer_command(layout, om, key, split, args.batch_size, args.device, args.dynamic)
            for split in SPLITS
        ]
    else:
        key = backend_key(chip, "ais_bench", args.aoe, args.dynamic)
        for batch_size in args.batch_sizes:
            om = om_path(layout, None if args.dynamic else batch_size, args.aoe)
            scratch = perf_scratch(layout, key, batch_size)
            # Started together, one per device; the stage sums their throughput.
            commands += [
                perf_command(
                    om,
                    scratch / f"dev{device}",
                    batch_size,
                    device,
                    args.iterations,
                    args.warmup,
                    args.dynamic,
                )
                for device in args.devices
            ]
    return note + [shlex.join(command) for command in commands]
