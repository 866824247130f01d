"""`--dry-run`: every stage of a plan in order, with what it would run (its `docker run` line,
or its command on this host) and the vendor tool commands inside it (atc, aoe, ais_bench,
trtexec: pcb.cli.preview), and whether this host has what the NPU stages need. Runs nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..cli.preview import tool_commands
from .executors import Executor, runs_here
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
    from .parallel import group_chains
    from .pipeline import split_plan

    executor = executor or executor_for(settings, host_root)
    lines: list[str] = []
    plan = split_plan(calls)
    groups = group_chains(plan, executor)
    # Chains on different engines run at the same time (commands.run_plan): shown as groups.
    sections: list[tuple[str, list[StageCall]]] = [("", list(calls))]
    if len(groups) > 1:
        sections = [("", list(plan.head))]
        sections += [(f"[{g.label}] (in parallel)", g.calls) for g in groups]
        sections.append(("after the chains join:", list(plan.tail)))
    total = len(calls)
    number = 0
    for title, section in sections:
        if title:
            lines.append(title)
        indent = "  " if title.startswith("[") else ""
        for call in section:
            number += 1
            preview = executor.preview(call)
            npu = f", NPU {','.join(map(str, call.npu_devices))}" if call.npu_devices else ""
            gpu = f", GPUs {gpus_label(call.gpus)}" if call.gpus is not None else ""
            lines.append(f"{indent}[{number}/{total}] {call.stage} ({preview.where}{npu}{gpu})")
            lines.append(f"{indent}  {preview.command}")
            commands = tool_commands(preview.argv, preview.environment, settings.trt_image)
            lines += [f"{indent}    $ {command}" for command in commands]
    # This host is checked for the NPU stages it runs; a remote engine's host is probed when
    # the run starts (remote_executor.preflight), which a dry run does not do.
    missing = sorted(
        {
            m
            for call in calls
            if call.npu_devices and runs_here(executor, call)
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
