"""Before anything runs: `--chip auto` resolved on the host, and the host checked for what the
NPU and GPU stages of a pipeline need, for all of them at once, before an image is built or a
CPU stage spends hours (each executor checks again per stage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

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
    """The device nodes and driver every NPU stage needs; PcbError naming the first stage
    short of them."""
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


def check_gpu_host(calls: Sequence[StageCall], executor: str, client: Any = None) -> None:
    """The Docker engine has the NVIDIA runtime (docker executor), or trtexec is on this host's
    PATH (local), when any call asks for GPUs."""
    gpu_calls = [call for call in calls if call.gpus is not None]
    if not gpu_calls:
        return
    if executor == "local":
        from ..tensorrt.tools import resolve_trtexec

        resolve_trtexec()
        return
    from .docker_executor import gpu_runtime_available
    from .engine import connect

    if not gpu_runtime_available(client or connect()):
        raise PcbError(
            f"stage {gpu_calls[0].stage} (pcb-{gpu_calls[0].image}) needs an NVIDIA GPU, and the "
            "Docker engine has no NVIDIA runtime: install the NVIDIA driver (`nvidia-smi` lists "
            "the GPUs) and the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure "
            "--runtime=docker && sudo systemctl restart docker` (`docker run --rm --gpus all "
            "ubuntu nvidia-smi` should then work). To see what would run, add --dry-run."
        )


def check_hosts(calls: Sequence[StageCall], executor: str, host_root: Path = Path("/")) -> None:
    """Both checks, NPU first."""
    check_npu_hosts(calls, host_root)
    check_gpu_host(calls, executor)
