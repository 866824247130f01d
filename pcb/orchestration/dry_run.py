"""`--dry-run`: every stage of a plan in order, with what it would run (its `docker run` line,
or its command on this host) and the vendor tool commands inside it (atc, aoe, ais_bench,
trtexec: pcb.cli.preview), and whether this host has what the NPU stages need. Runs nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..cli.preview import tool_commands
from .executors import Executor
from .gpus import gpus_label
from .routing import executor_for
from .settings import Settings
from .spec import npu_host
from .stage import StageCall


def describe_plan(
    calls: Sequence[StageCall],
    settings: Settings,
    host_root: Path = Path("/"),
    executor: Executor | None = None,
) -> list[str]:
    """One block per stage, in order, then a closing line; `executor` defaults to the
    settings' own."""
    executor = executor or executor_for(settings, host_root)
    lines = []
    total = len(calls)
    for number, call in enumerate(calls, 1):
        preview = executor.preview(call)
        npu = f", NPU {','.join(map(str, call.npu_devices))}" if call.npu_devices else ""
        gpu = f", GPUs {gpus_label(call.gpus)}" if call.gpus is not None else ""
        lines.append(f"[{number}/{total}] {call.stage} ({preview.where}{npu}{gpu})")
        lines.append(f"  {preview.command}")
        commands = tool_commands(preview.argv, preview.environment, settings.trt_image)
        lines += [f"    $ {command}" for command in commands]
    missing = sorted(
        {
            m
            for call in calls
            if call.npu_devices
            for m in npu_host(call.npu_devices, host_root).missing
        }
    )
    if missing:
        lines.append(
            "dry run: nothing ran. This host lacks what the NPU stages need "
            f"({', '.join(missing)}): without --dry-run, nothing would start."
        )
    else:
        lines.append("dry run: nothing ran.")
    return lines
