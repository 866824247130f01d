"""Where a stage call runs, behind one small interface: on this host (`LocalExecutor`), or in
its container on the Docker engine (`docker_executor.DockerExecutor`), or on another engine
through volumes (`remote_executor.RemoteExecutor`); `EngineRouter` sends each call to the one
its image is set to (the `engines` setting).

An executor previews a call (the command line that would run, and the stage's argv and
environment as the stage sees them: what a dry run shows) and runs it (a PcbError when it
fails). A further executor (a Kubernetes Job per stage, say) implements the same two methods.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
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


class EngineRouter:
    """Each call on the executor of its image (`remote`), or on `default` (this host's
    engine): `engines: {runtime: ssh://user@npu-host}` runs the runtime stages there."""

    name = "docker"

    def __init__(self, default: Executor, remote: Mapping[str, Executor]) -> None:
        self.default, self.remote = default, dict(remote)

    @property
    def images(self) -> dict[str, str]:
        """The content tags a build made, by image: the local executor's, which the remote
        executors send on (`run_calls` hands a build's tags over through this)."""
        return getattr(self.default, "images", {})

    def executor(self, call: StageCall) -> Executor:
        return self.remote.get(call.image, self.default)

    def is_local(self, call: StageCall) -> bool:
        return call.image not in self.remote

    def preview(self, call: StageCall) -> Preview:
        preview = self.executor(call).preview(call)
        if self.is_local(call):
            return replace(preview, where=f"{preview.where} on local")
        return preview

    def run(self, call: StageCall) -> None:
        self.executor(call).run(call)


def runs_here(executor: object, call: StageCall) -> bool:
    """Whether this host runs the call: yes, unless the executor routes it to another engine
    (an EngineRouter, or anything else that says so with `is_local`)."""
    is_local = getattr(executor, "is_local", None)
    return True if is_local is None else bool(is_local(call))
