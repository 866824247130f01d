"""Where a stage call runs, behind one small interface: on this host (`LocalExecutor`), or in
its container on the Docker engine (`docker_executor.DockerExecutor`).

An executor previews a call (the command line that would run, and the stage's argv and
environment as the stage sees them: what a dry run shows) and runs it (a PcbError when it
fails). A further executor, one that runs containers on another engine, implements the same
two methods.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import PcbError
from .stage import StageCall


@dataclass(frozen=True)
class Preview:
    """What running a call means on one executor."""

    where: str  # "pcb-runtime", "this host"
    command: str  # the command line that would run
    argv: tuple[str, ...]  # the stage's argv as the stage sees it (container paths there)
    environment: Mapping[str, str] | None  # the container's; None: this host's own


class Executor(Protocol):
    name: str

    def preview(self, call: StageCall) -> Preview: ...

    def run(self, call: StageCall) -> None: ...


class LocalExecutor:
    """`python -m pcb <stage> ...` with this interpreter, in `cwd` (default: here)."""

    name = "local"

    def __init__(self, cwd: Path | None = None) -> None:
        self.cwd = cwd

    def preview(self, call: StageCall) -> Preview:
        argv = tuple(call.argv())
        return Preview("this host", f"python -m pcb {' '.join(argv)}", argv, None)

    def run(self, call: StageCall) -> None:
        print(f"==> {call.stage}: python -m pcb {' '.join(call.argv())}", flush=True)
        command = [sys.executable, "-m", "pcb", *call.argv()]
        result = subprocess.run(command, check=False, cwd=self.cwd)
        if result.returncode != 0:
            raise PcbError(f"stage {call.stage} failed with exit status {result.returncode}")

