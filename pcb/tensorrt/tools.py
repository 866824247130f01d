"""Running trtexec and nvidia-smi, and what they tell before anything is built.

Every call goes through a `Runner` (argv -> exit status + combined output), so the stages are
tested with a stand-in that needs no GPU; the default runs the real program.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

from ..errors import PcbError
from .engine_cache import UNKNOWN
from .trtexec import TRTEXEC, version_probe_command
from .trtexec_output import parse_version


@dataclass(frozen=True)
class Completed:
    returncode: int
    output: str  # stdout and stderr interleaved, as a terminal would show them


Runner = Callable[[Sequence[str]], Completed]

TRTEXEC_HINT = (
    "run this stage in the tensorrt image (`invoke trt`, or by hand: docs/tensorrt.md), or "
    "install TensorRT and put trtexec on the PATH (/usr/src/tensorrt/bin in NVIDIA's images)"
)


def run_command(argv: Sequence[str]) -> Completed:
    """Run `argv`, capturing stdout and stderr together; a missing program is a PcbError."""
    try:
        result = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            check=False,
        )
    except FileNotFoundError:
        raise PcbError(f"{argv[0]} not found: {TRTEXEC_HINT}") from None
    except PermissionError:
        raise PcbError(f"{argv[0]} is not executable: check its permissions") from None
    return Completed(result.returncode, result.stdout or "")


def resolve_trtexec(trtexec: str = TRTEXEC) -> str:
    """The trtexec to run: a path as given, or the one on the PATH; PcbError when absent."""
    if "/" in trtexec:
        return trtexec
    found = shutil.which(trtexec)
    if found is None:
        raise PcbError(f"{trtexec} is not on the PATH: {TRTEXEC_HINT}")
    return found


def tensorrt_version(trtexec: str = TRTEXEC, runner: Runner = run_command) -> str:
    """The TensorRT version trtexec is built against (from `trtexec --help`'s first line);
    else the installed Python bindings' version; else "unknown"."""
    try:
        found = parse_version(runner(version_probe_command(trtexec)).output)
    except PcbError:
        found = ""
    if found:
        return found
    for distribution in ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return UNKNOWN


def gpu_name(
    device: int = 0,
    runner: Runner = run_command,
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """The name of CUDA device `device` as nvidia-smi reports it; "unknown" without nvidia-smi.

    Part of the engine cache key: an engine built on one GPU model does not run on another.
    (In a container the NVIDIA toolkit mounts nvidia-smi; device 0 is the first GPU given.)
    """
    argv = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", f"--id={device}"]
    if which(argv[0]) is None:
        return UNKNOWN
    try:
        result = runner(argv)
    except PcbError:
        return UNKNOWN
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    return lines[0] if result.returncode == 0 and lines else UNKNOWN
