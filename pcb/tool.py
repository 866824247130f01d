"""Running a vendor tool (atc, aoe, ais_bench, trtexec, nvidia-smi) as a subprocess: its
stdout and stderr together, as a terminal shows them, echoed as they come unless quiet, and
kept whole for the parsers. Every stage that runs a tool runs it through `run_tool` (the
TensorRT stages through a Runner, which tests replace with a stand-in)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import PcbError

TOOL_HINTS = {
    "atc": "atc comes with the CANN toolkit: run this stage in the cann image (`invoke convert`), "
    "or `source /usr/local/Ascend/ascend-toolkit/set_env.sh` first",
    "aoe": "aoe comes with the CANN toolkit: run this stage in the cann image, or "
    "`source /usr/local/Ascend/ascend-toolkit/set_env.sh` first",
}


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    output: str  # stdout and stderr interleaved, as a terminal would show them
    argv: tuple[str, ...] = ()

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    quiet: bool = False,
    echo: IO[str] | None = None,
    hint: str | None = None,
) -> ToolRun:
    """Run argv with stderr folded into stdout; echo each line unless quiet; return it all.

    A missing program is a PcbError naming where the tool comes from (`hint`, else a known
    one of TOOL_HINTS), not a traceback."""
    out = echo if echo is not None else sys.stdout
    program = str(argv[0])
    try:
        process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=None if cwd is None else str(cwd),
            text=True,
            errors="replace",
        )
    except OSError as error:
        raise _not_runnable(program, error, hint) from None
    lines = []
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            lines.append(line)
            if not quiet:
                out.write(line)
                out.flush()
    return ToolRun(process.wait(), "".join(lines), tuple(str(a) for a in argv))


def start_tool(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None, hint: str | None = None
) -> subprocess.Popen:
    """Start argv with its stdout and stderr going to `log`, and return at once (several
    devices timed at the same time each get one); the caller waits for it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # The child keeps its own descriptor of the log; the parent's closes with the block.
    with open(log, "w", encoding="utf-8") as handle:
        try:
            return subprocess.Popen(
                list(argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        except OSError as error:
            raise _not_runnable(str(argv[0]), error, hint) from None


def _not_runnable(program: str, error: OSError, hint: str | None) -> PcbError:
    if isinstance(error, PermissionError):
        return PcbError(f"{program} is not executable: check its permissions")
    if not isinstance(error, FileNotFoundError):
        return PcbError(f"{program} could not be started: {error}")
    hint = hint or TOOL_HINTS.get(Path(program).name, "install it, or run the stage in its image")
    where = "" if "/" in program else " on the PATH"
    return PcbError(f"{program} not found{where}: {hint}")
