"""How much memory and how many processes a stage container may use.

The limits are there so that a stage that runs away (a leak, a batch too large for the host)
is stopped inside its container with an error saying so, instead of the kernel's OOM killer
choosing a victim among the host's processes (the Docker engine, the shell, other jobs) or a
fork bomb filling the host's process table. They are not meant to ration honest work, so both
default to a share of the host that no stage comes near (README, "Containers").
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import PcbError

AUTO = "auto"
UNLIMITED = ("0", "none")
MIB = 1 << 20
# Docker refuses a memory limit below 6 MiB.
DOCKER_MINIMUM = 6 * MIB
# The host keeps this share of its memory when the limit is "auto".
HOST_SHARE = 0.10
UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)

# Processes and threads together (each counts against the container's pids limit): far above
# what a stage starts on a small host, far below a host's pid_max; see pids_limit().
PIDS_FLOOR = 4096


def host_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemTotal in bytes, None where /proc/meminfo cannot be read (not Linux)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def auto_memory_limit(total: int | None) -> int | None:
    """All of the host's memory but a tenth, in whole MiB; None (no limit) if unknown."""
    if not total:
        return None
    return max(DOCKER_MINIMUM, int(total * (1 - HOST_SHARE)) // MIB * MIB)


def parse_memory_limit(value: object, total: int | None = None) -> int | None:
    """A memory limit setting in bytes; None means no limit.

    "auto" (the default): the host's memory less a tenth; 0 or "none": no limit; otherwise a
    size such as 16g, 512m, 20GiB or a number of bytes (units are powers of 1024, as Docker's).
    """
    if isinstance(value, bool):
        raise _bad(value)
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip().lower()
    else:
        raise _bad(value)
    if text == AUTO:
        return auto_memory_limit(host_memory() if total is None else total)
    if text in UNLIMITED:
        return None
    match = _SIZE.match(text)
    if not match:
        raise _bad(value)
    size = int(float(match.group(1)) * UNITS[match.group(2).lower()])
    if size < DOCKER_MINIMUM:
        raise PcbError(
            f"memory limit {value!r} is below Docker's minimum of 6m: give e.g. 8g, or 0 for "
            "no limit"
        )
    return size


def _bad(value: object) -> PcbError:
    return PcbError(
        f"memory limit {value!r} is not a size: give auto (the host's memory less a tenth), "
        "a size such as 16g or 512m, or 0 / none for no limit"
    )


def docker_size(size: int) -> str:
    """A byte count as Docker's command line writes it: 16g, 22118m, or bytes."""
    for unit in ("g", "m", "k"):
        if size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]}{unit}"
    return str(size)


def human_size(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{size / MIB:.0f} MiB"


def pids_limit(cores: int | None = None) -> int:
    """The most processes and threads a stage container may have at once.

    An upper bound of what a stage starts: preprocessing runs a worker process per core next
    to its parent, and any of them may run a thread per core (the BLAS pool numpy can start,
    onnxruntime's intra-op threads) plus a few of its own (the pool's handler threads), so
    (cores + 1) x (cores + 4). The limit is twice that, never below PIDS_FLOOR; it passes
    4096 from 43 cores on. Measured on 2 cores (the demo run, each stage's container's
    pids.current polled every 10 ms): at most 9 tasks (infer and perf), 8 in preprocessing.
    """
    cores = cores or os.cpu_count() or 1
    return max(PIDS_FLOOR, 2 * (cores + 1) * (cores + 4))
