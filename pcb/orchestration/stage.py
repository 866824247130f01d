"""A stage call: which `python -m pcb` command, in which image, touching which folders."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from ..errors import PcbError

Arg = Union[str, Path]


@dataclass(frozen=True)
class StageCall:
    """One `python -m pcb <stage> ...` invocation.

    `args` holds the stage's arguments; Path items are host paths, which a container
    executor rewrites to where it mounts them. `image` is the image family that runs it.
    `npu_devices`: Ascend device ids the container gets (/dev/davinci<N> and the driver);
    `gpus`: NVIDIA GPUs it gets, a count (-1 = all) or device ids; neither by default.
    """

    stage: str
    image: str
    args: tuple[Arg, ...] = ()
    writes_data: bool = False  # demo-data writes into data/; every other stage reads it only
    needs_network: bool = False
    env: dict[str, str] = field(default_factory=dict)
    npu_devices: tuple[int, ...] = ()
    gpus: int | tuple[str, ...] | None = None

    def argv(self) -> list[str]:
        return [self.stage, *(str(a) for a in self.args)]


def run_local(call: StageCall) -> None:
    """Run the stage on the host with this interpreter; a failure raises PcbError."""
    command = [sys.executable, "-m", "pcb", *call.argv()]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise PcbError(f"stage {call.stage} failed with exit status {result.returncode}")
