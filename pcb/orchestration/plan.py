"""Before anything runs: `--chip auto` resolved on the host, the Ascend host files checked for
every NPU stage at once, and the dry run's plan (each container, its command, and the vendor
tool commands inside it, in order)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..ascend.chips import AUTO
from ..ascend.npu_smi import detect_chip, find_npu_smi
from ..errors import PcbError
from .settings import Settings
from .spec import npu_host, npu_missing_message
from .stage import StageCall


def resolve_auto_chip(settings: Settings, host_root: Path = Path("/")) -> Settings:
    """Settings whose chip `auto` is replaced by the chip `npu-smi info` names on this host."""
    if settings.chip != AUTO:
        return settings
    program = find_npu_smi(host_root)
    if program is None:
        raise PcbError(
            "--chip auto reads the chip from `npu-smi info`, and this host has no npu-smi "
            "(/usr/local/bin, /usr/local/sbin, PATH): pass the chip by name, e.g. --chip 310P3 "
            "(a dry run on a machine without an NPU needs it too)"
        )
    chip = detect_chip(settings.devices, program)
    print(f"--chip auto: npu-smi names the chip {chip}")
    return replace(settings, chip=chip)


def check_npu_hosts(calls: Sequence[StageCall], host_root: Path = Path("/")) -> None:
    """The device nodes and driver every NPU stage needs, checked before the first stage runs
    (the executor checks again per stage); PcbError naming the first stage short of them."""
    for call in calls:
        if not call.npu_devices:
            continue
        npu = npu_host(call.npu_devices, host_root)
        if npu.missing:
            raise PcbError(
                f"stage {call.stage} (pcb-{call.image}) needs an Ascend NPU: "
                + npu_missing_message(npu.missing, call.npu_devices)
                + " To see what would run, add --dry-run."
            )


def describe_plan(
    calls: Sequence[StageCall],
    settings: Settings,
    host_root: Path = Path("/"),
) -> list[str]:
    """One block per stage, in order: the stage, its `docker run` line (or its local command),
    and the atc / aoe / ais_bench commands it runs inside; a closing line says whether this
    host has what the NPU stages need."""
    from ..cli.preview import tool_commands
    from ..tensorrt.plan import gpus_label
    from .docker_executor import container_spec

    lines = []
    total = len(calls)
    for number, call in enumerate(calls, 1):
        where = f"pcb-{call.image}" if settings.executor == "docker" else "this host"
        npu = f", NPU {','.join(map(str, call.npu_devices))}" if call.npu_devices else ""
        gpu = f", GPUs {gpus_label(call.gpus)}" if call.gpus is not None else ""
        lines.append(f"[{number}/{total}] {call.stage} ({where}{npu}{gpu})")
        if settings.executor == "docker":
            spec = container_spec(
                call,
                data_dir=settings.data_dir,
                results_dir=settings.results_dir,
                host_root=host_root,
                require_npu=False,
                memory_limit=settings.memory_limit,
            )
            lines.append(f"  {spec.to_docker_run()}")
            inner, environment = spec.command, spec.environment
        else:
            lines.append(f"  python -m pcb {' '.join(call.argv())}")
            inner, environment = tuple(call.argv()), None
        commands = tool_commands(inner, environment, settings.trt_image)
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
