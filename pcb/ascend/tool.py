"""Running a vendor tool as a subprocess: its output shown as it comes and kept for parsing."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import PcbError

TOOL_HINTS = {
    "atc": "atc comes with the CANN toolkit: run this stage in the cann image (`invoke convert`), "
    "or `source /usr/local/Ascend/ascend-toolkit/set_env.sh` first",
    "aoe": "aoe comes with the CANN toolkit: run this stage in the cann image, or "
    "`source /usr/local/Ascend/ascend-toolkit/set_env.sh` first",
}


@dataclass(frozen=True)
class ToolRun:
    argv: tuple[str, ...]
    returncode: int
    output: str

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
) -> ToolRun:
    """Run argv with stderr folded into stdout; echo each line unless quiet; return it all.

    A missing program is a PcbError naming where the tool comes from, not a traceback."""
    out = echo if echo is not None else sys.stdout
    full_env = {**os.environ, **(env or {})}
    try:
        process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=None if cwd is None else str(cwd),
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        program = Path(argv[0]).name
        hint = TOOL_HINTS.get(program, "install it, or run the stage in its image")
        raise PcbError(f"{program} not found on the PATH: {hint}") from None
    lines = []
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            lines.append(line)
            if not quiet:
                out.write(line)
                out.flush()
    return ToolRun(tuple(argv), process.wait(), "".join(lines))
