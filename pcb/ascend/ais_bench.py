"""ais_bench (`python3 -m ais_bench`): which version is installed, and its command line for it.

The package has said version 0.0.2 since 2022-11 while its options kept changing, so the
version that matters is read from the options its `--help` lists (source: the argparse
definitions in Ascend/tools, ais-bench_workload/tool/ais_bench, across its history; the
option sets per version are in tests/fixtures/real/ais_bench/flags_by_version.json):

- ais_infer (2022-05 .. 2022-10, `python3 ais_infer.py`): no --warmup_count, no
  --display_all_summary, one device; not run by pcb (its results can still be imported);
- ais_bench 2022-11 on: --warmup_count, --display_all_summary; its multi-device mode
  (`--device 0,1`, one process, a summed throughput) came in 2022-12 to 2023-02, which
  --help does not tell apart, so pcb runs one process per device there;
- ais_bench 2023-06-19 on: also --divide_input, which marks a version with the multi-device
  mode: pcb uses that mode there;
- 2024-02 on: also --pipeline / --threads (not used: their summary is the mean only).

Pure: building a command runs nothing; `read_profile` asks the installed tool.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PcbError

MODULE = "ais_bench"
OUTFMT = "BIN"
# The options every command pcb builds uses, and those that tell the versions apart.
REQUIRED = frozenset(
    {"--model", "--input", "--output", "--outfmt", "--batchsize", "--device", "--loop",
     "--dymBatch", "--warmup_count", "--display_all_summary"}
)  # fmt: skip
MULTI_DEVICE_MARK = "--divide_input"
_OPTION = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")


@dataclass(frozen=True)
class AisBenchProfile:
    """The options one installed ais_bench takes, and what pcb may therefore ask of it."""

    name: str
    options: frozenset[str]

    @property
    def multi_device(self) -> bool:
        """`--device 0,1,2` in one process, printing each device's and the summed throughput."""
        return MULTI_DEVICE_MARK in self.options

    def describe(self) -> str:
        mode = "multi-device mode" if self.multi_device else "one process per device"
        return f"{self.name} ({mode})"


# What a dry run shows before the tool can be asked: the options of the newest version read
# (Ascend/tools history, 2025-12), which a run checks against the installed tool's --help.
DEFAULT_PROFILE = AisBenchProfile(
    "ais_bench 0.0.2 (2023-06 or later, assumed until the installed one is read)",
    REQUIRED | {MULTI_DEVICE_MARK, "--pipeline", "--threads", "--output_dirname"},
)


def help_options(help_text: str) -> frozenset[str]:
    """The long options a --help text lists."""
    return frozenset(_OPTION.findall(help_text))


def profile_from_options(options: frozenset[str], version: str = "0.0.2") -> AisBenchProfile:
    """The profile of a tool with these options; PcbError naming the version when pcb cannot
    drive it."""
    if "--om-model" in options:
        raise PcbError(
            "this is msit benchmark (options --om-model, --batch-size, ...), not "
            "`python3 -m ais_bench`: install the ais_bench and aclruntime wheels "
            "(docker/README.md); msit benchmark's outputs can still be read (same format)"
        )
    missing = sorted(REQUIRED - options)
    if not missing:
        era = "2023-06 or later" if MULTI_DEVICE_MARK in options else "2022-11 to 2023-06"
        return AisBenchProfile(f"ais_bench {version} ({era})", options)
    if "--model" in options and "--warmup_count" not in options:
        what = "ais_infer from before 2022-11 (no --warmup_count, no --display_all_summary)"
    else:
        what = f"an ais_bench without {', '.join(missing)}"
    raise PcbError(
        f"the installed tool is {what}: pcb runs ais_bench 0.0.2 from 2022-11 or later "
        "(Ascend/tools, ais-bench_workload/tool/ais_bench; wheels in docker/README.md). "
        "Results made with the old tool by hand can be brought in with `invoke import-results`"
    )


def read_profile(python: str = "python3", timeout: int = 120) -> AisBenchProfile:
    """Ask the installed ais_bench for its options (`python -m ais_bench --help`)."""
    try:
        result = subprocess.run(
            [python, "-m", MODULE, "--help"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PcbError(f"`{python} -m {MODULE} --help` could not run ({error})") from None
    text = result.stdout + result.stderr
    if result.returncode != 0 or "--model" not in text:
        tail = " / ".join(text.strip().splitlines()[-3:]) or "no output"
        raise PcbError(
            f"`{python} -m {MODULE} --help` failed ({tail}): ais_bench is not installed for "
            "this Python, or its aclruntime cannot load the CANN libraries (source the "
            "toolkit's set_env.sh; run the stage in the cann image)"
        )
    return profile_from_options(help_options(text), version_text(python))


def device_argument(devices: Sequence[int]) -> str:
    if not devices:
        raise PcbError("no NPU device given to ais_bench")
    return ",".join(str(d) for d in devices)


def ais_bench_command(
    model: str,
    *,
    input_dir: str | None = None,
    output: str | None = None,
    outfmt: str = OUTFMT,
    batch_size: int | None = None,
    devices: Sequence[int] = (0,),
    loop: int | None = None,
    warmup: int | None = None,
    dym_batch: int | None = None,
    display_all_summary: bool = False,
    python: str = "python3",
    profile: AisBenchProfile = DEFAULT_PROFILE,
) -> list[str]:
    """`python3 -m ais_bench --model ... [--input DIR] [--output DIR --outfmt BIN] ...`.

    Without `input_dir` it is a pure inference (zeros), the way to time a model. `batch_size`
    only feeds ais_bench's throughput formula, so it must be the model's; `dym_batch` picks
    the gear of a dynamic-batch model. Several `devices` need a profile with the
    multi-device mode. Every option used is checked against the profile's."""
    if outfmt not in ("BIN", "NPY", "TXT"):
        raise PcbError(f"ais_bench --outfmt {outfmt!r}: BIN, NPY or TXT")
    if len(devices) > 1 and not profile.multi_device:
        raise PcbError(f"{profile.describe()} takes one device per process: run one per device")
    command = [python, "-m", MODULE, "--model", model]
    if input_dir is not None:
        command += ["--input", input_dir]
    if output is not None:
        command += ["--output", output, "--outfmt", outfmt]
    if batch_size is not None:
        command += ["--batchsize", str(batch_size)]
    command += ["--device", device_argument(devices)]
    if loop is not None:
        command += ["--loop", str(loop)]
    if warmup is not None:
        command += ["--warmup_count", str(warmup)]
    if dym_batch is not None:
        command += ["--dymBatch", str(dym_batch)]
    if display_all_summary:
        command += ["--display_all_summary", "True"]
    unknown = sorted({a for a in command if a.startswith("--")} - profile.options)
    if unknown:
        raise PcbError(f"{profile.describe()} has no option {', '.join(unknown)}")
    return command


def natural_sort(names: Sequence[str]) -> list[str]:
    """ais_bench's order of the files of an input folder (its utils.natural_sort)."""

    def key(text: str) -> list[Any]:
        return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]

    return sorted(sorted(names), key=key)


def output_name(input_file: str, index: int = 0, outfmt: str = OUTFMT) -> str:
    """The file ais_bench writes for output `index` of an input file: `<name up to the first
    dot>_<index>.<fmt>`."""
    return f"{input_file.split('.')[0]}_{index}.{outfmt.lower()}"


def version_text(python: str = "python3") -> str:
    """The version of the ais_bench that `python -m ais_bench` runs ("unknown" when that
    interpreter has no metadata of it): asked of that interpreter, in the tool's environment."""
    code = (
        "from importlib import metadata\n"
        "for name in ('ais_bench', 'ais-bench'):\n"
        "    try:\n"
        "        print(metadata.version(name)); break\n"
        "    except metadata.PackageNotFoundError:\n"
        "        pass\n"
    )
    try:
        result = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else "unknown"
