"""Running trtexec and nvidia-smi, and what they tell before anything is built.

Every call goes through a `Runner` (argv -> exit status + combined output), so the stages are
tested with a stand-in that needs no GPU; the default runs the real program.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

from ..errors import PcbError
from ..tool import ToolRun, run_tool
from .engine_cache import UNKNOWN
from .trtexec import TRTEXEC, version_probe_command
from .trtexec_output import parse_tensorrt_version, unversioned_banner
from .versions import TensorRTVersion, require_supported

# trtexec's and nvidia-smi's run, as pcb.tool gives it.
Completed = ToolRun
Runner = Callable[[Sequence[str]], Completed]

TRTEXEC_HINT = (
    "run this stage in the tensorrt image (`invoke trt`, or by hand: docs/tensorrt.md), or "
    "install TensorRT and put trtexec on the PATH (/usr/src/tensorrt/bin in NVIDIA's images)"
)


def run_command(argv: Sequence[str]) -> Completed:
    """Run `argv` quietly, its stdout and stderr together; a missing program is a PcbError."""
    return run_tool(argv, quiet=True, hint=TRTEXEC_HINT)


def resolve_trtexec(trtexec: str = TRTEXEC) -> str:
    """The trtexec to run: a path as given, or the one on the PATH; PcbError when absent."""
    if "/" in trtexec:
        return trtexec
    found = shutil.which(trtexec)
    if found is None:
        raise PcbError(f"{trtexec} is not on the PATH: {TRTEXEC_HINT}")
    return found


PACKAGES = ("tensorrt", "tensorrt-cu12", "tensorrt-cu11")


@dataclass(frozen=True)
class TrtexecInfo:
    """What `trtexec --help` told before anything ran: the version and the options."""

    version: TensorRTVersion
    help_text: str
    source: str  # where the version was read


def _package_version() -> tuple[str, str] | None:
    for distribution in PACKAGES:
        try:
            return distribution, metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def probe_trtexec(trtexec: str = TRTEXEC, runner: Runner = run_command) -> TrtexecInfo:
    """trtexec's TensorRT version, from its --help banner (8.0 on), else from the installed
    TensorRT Python package (TensorRT 7's trtexec prints none); a PcbError when neither says
    it, or when the version is not one these stages support."""
    output = runner(version_probe_command(trtexec)).output
    version = parse_tensorrt_version(output)
    source = "trtexec --help"
    if version is None:
        package = _package_version()
        if package is not None:
            try:
                version = TensorRTVersion.parse(package[1])
                source = f"Python package {package[0]} {package[1]}"
            except PcbError:
                version = None
    if version is None:
        if unversioned_banner(output):
            raise PcbError(
                f"{trtexec} printed no TensorRT version (trtexec before 8.0 prints none) and no "
                "TensorRT Python package is installed to tell it: install the tensorrt wheel of "
                "the same version, or use the tensorrt image (docs/tensorrt.md)"
            )
        raise PcbError(
            f"`{trtexec} --help` printed neither trtexec's banner nor a TensorRT version: is it "
            f"trtexec? Its output began: {output.strip()[:200]!r}"
        )
    return TrtexecInfo(require_supported(version), output, source)


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
