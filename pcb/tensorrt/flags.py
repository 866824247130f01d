"""Which trtexec flags each TensorRT version takes, for the options these stages pass.

Read from `samples/common/sampleOptions.cpp` of NVIDIA/TensorRT on each release branch
(release/7.0 to release/10.16 and release/11.0), and checked against the real `trtexec --help`
outputs of 8.2.1, 8.6.1, 10.0.1 and 10.16.1 in tests/fixtures/real/trtexec/help_*.txt:

- build the engine, time nothing: `--buildOnly` from 7.0 to 8.5; `--skipInference` from 8.6
  (8.6-9.x still take `--buildOnly` as a deprecated alias, with a warning; 10.0 does not).
- workspace limit in MiB: `--workspace=N` up to 8.3; `--memPoolSize=workspace:N` from 8.4
  (`--workspace` is deprecated from 8.4 and gone in 10.0).
- per-query timings: `--exportTimes=F` in every version (6.0 on).
- per-layer profile: `--exportProfile=F`; `--separateProfileRun` (7.2 on) keeps the profiler
  out of the timed run.
- `--explicitBatch`: never passed. An ONNX model given --shapes is explicit batch in every
  version; the flag is deprecated without effect from 8.2 and an unknown option in 10.0.
- `--threads`: in every version from 7.0 to 11.0.

An unknown option makes trtexec print `Unknown option: --X` and fail before doing anything
(`parseHelp`/`argsOK` in samples/trtexec/trtexec.cpp), so each flag is chosen for the version,
and `check_listed` refuses, before the run, a flag the version's own --help does not list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import PcbError
from .versions import TensorRTVersion

# Option lines of `trtexec --help` start with exactly two spaces; continuation lines are
# indented further and may mention other flags in prose ("--skipInference is enabled ...").
_OPTION_LINE = re.compile(r"^ {2}(--[A-Za-z][\w-]*)")


def build_only_flag(version: TensorRTVersion) -> str:
    """Build (and save) the engine, then exit without timing it."""
    return "--skipInference" if version.at_least(8, 6) else "--buildOnly"


def workspace_flag(version: TensorRTVersion, mib: int) -> str:
    """Cap the builder's workspace at `mib` MiB (both flags count MiB without a suffix)."""
    if isinstance(mib, bool) or not isinstance(mib, int) or mib <= 0:
        raise PcbError(f"workspace must be a positive number of MiB, got {mib!r}")
    if version.at_least(8, 4):
        return f"--memPoolSize=workspace:{mib}"
    return f"--workspace={mib}"


def has_separate_profile_run(version: TensorRTVersion) -> bool:
    """--separateProfileRun (7.2+): profile in a second run, so the timed run has no profiler.
    Without it the profiler slows every timed query, and 10.x prints no summary at all (the
    `The e2e network timing is not reported` case of the 10.16.1 fixture)."""
    return version.at_least(7, 2)


def listed_options(help_text: str) -> frozenset[str]:
    """The option names `trtexec --help` lists, e.g. {"--onnx", "--skipInference", ...}."""
    found = set()
    for line in help_text.splitlines():
        match = _OPTION_LINE.match(line.rstrip("\r"))
        if match:
            found.add(match.group(1))
    return frozenset(found)


def check_listed(argv: Sequence[str], help_text: str, version: TensorRTVersion) -> None:
    """PcbError naming every flag of `argv` that this trtexec's --help does not list.

    A help text listing no option at all (not trtexec's, or cut short) proves nothing, so
    nothing is refused then; trtexec itself still refuses an unknown option.
    """
    listed = listed_options(help_text)
    if not listed:
        return
    missing = []
    for arg in argv[1:]:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in listed:
            missing.append(name)
    if missing:
        raise PcbError(
            f"trtexec of TensorRT {version} does not list {', '.join(missing)} in its --help, "
            "so it would stop with `Unknown option`. This is a TensorRT these stages were not "
            "checked against: use one of the images of docs/tensorrt.md (trt_image in "
            "invoke.yaml), or report the trtexec --help output"
        )
