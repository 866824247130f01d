"""`npu-smi info`: the table that names the chips (`--chip auto`) and says which chips share a
card (per-card throughput).

Two layouts are met in practice, both handled by one parser that reads the header rows:

    | NPU     Name      | Health          | Power(W)          Temp(C)              |   (310)
    | Chip    Device    | Bus-Id          | AICore(%)         Memory-Usage(MB)     |
    | NPU  Name        | Health  | Power(W)   Temp(C)   Hugepages-Usage(page) |   (310P)
    | Chip Device      | Bus-Id  | AICore(%)  Memory-Usage(MB)                |

Each chip is two rows: `<card id> <name> | <health> | ...` then `<chip id> [<device id>] |
<bus id> | ...`. Newer drivers add a process table below, which ends the parse.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PcbError
from .chips import known_chips_text, normalize_chip

NPU_SMI_PATHS = ("/usr/local/bin/npu-smi", "/usr/local/sbin/npu-smi")
_VERSION = re.compile(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)")
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")


@dataclass(frozen=True)
class NpuChip:
    """One chip of the table. `device_id` is the logical id ais_bench's --device and
    /dev/davinci<N> use: the Device column where the table has one, else the chip's position."""

    card: int
    chip: int
    device_id: int
    name: str
    health: str
    bus_id: str

    @property
    def chip_name(self) -> str:
        """The name as --chip takes it, or the raw name when it is no known inference chip."""
        try:
            return normalize_chip(self.name, allow_auto=False)
        except PcbError:
            return self.name


@dataclass(frozen=True)
class NpuSmiInfo:
    version: str | None
    chips: tuple[NpuChip, ...]

    def by_device(self, device_id: int) -> NpuChip | None:
        return next((c for c in self.chips if c.device_id == device_id), None)

    def card_devices(self, card: int) -> tuple[int, ...]:
        return tuple(sorted(c.device_id for c in self.chips if c.card == card))


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _is_bus_id(text: str) -> bool:
    return bool(_BUS_ID.match(text)) or text.upper() in {"NA", "N/A", "-"}


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """The chips of an `npu-smi info` table, in table order; PcbError when it lists none."""
    version = None
    has_device_column = True
    pending: tuple[int, str, str] | None = None
    chips: list[NpuChip] = []
    for raw in text.splitlines():
        line = raw.strip()
        found = _VERSION.search(line)
        if found:
            version = found.group(1)
            continue
        if not line.startswith("|"):
            continue
        cells = _cells(line)
        first = cells[0].split()
        if "Process id" in line or "No running processes" in line:
            break  # the process table: nothing more about the chips
        if first[:1] == ["NPU"] and "Name" in first:
            continue
        if first[:1] == ["Chip"]:
            has_device_column = "Device" in first
            continue
        if len(cells) < 2 or not first or not first[0].isdigit():
            continue
        if _is_bus_id(cells[1]):
            # The chip row: `<chip> [<device>] | <bus id>`, following its card row.
            if pending is None:
                continue
            card, name, health = pending
            chip_id = int(first[0])
            if has_device_column and len(first) > 1 and first[1].isdigit():
                device_id = int(first[1])
            else:
                device_id = len(chips)
            chips.append(NpuChip(card, chip_id, device_id, name, health, cells[1]))
            pending = None
        elif len(first) >= 2:
            pending = (int(first[0]), first[1], cells[1])
    if not chips:
        raise PcbError(
            "`npu-smi info` listed no NPU chip: is the Ascend driver loaded (and the chips "
            "healthy)? Pass the chip by name instead, e.g. --chip 310P3"
        )
    return NpuSmiInfo(version, tuple(chips))


def chip_from_info(info: NpuSmiInfo, devices: Sequence[int] = ()) -> str:
    """The one chip name of the chosen devices (all chips when none are chosen)."""
    chosen = [info.by_device(d) for d in devices] if devices else list(info.chips)
    missing = [d for d, c in zip(devices, chosen) if c is None]
    if missing:
        listed = ", ".join(str(c.device_id) for c in info.chips)
        raise PcbError(
            f"NPU device(s) {missing} are not in `npu-smi info` (it lists devices {listed}): "
            "choose --devices among those"
        )
    names = sorted({c.name for c in chosen if c is not None})
    if len(names) != 1:
        raise PcbError(
            f"`npu-smi info` lists several chip kinds ({', '.join(names)}): choose one with "
            "--chip and the devices of that kind with --devices"
        )
    try:
        return normalize_chip(names[0], allow_auto=False)
    except PcbError:
        raise PcbError(
            f"`npu-smi info` names the chip {names[0]!r}, which is not an Ascend inference chip "
            f"this project converts for ({known_chips_text()}): pass --chip with one of those, "
            "e.g. the physical chip's name for a virtual NPU such as 310Pvir02"
        ) from None


def find_npu_smi(host_root: Path = Path("/")) -> str | None:
    for candidate in NPU_SMI_PATHS:
        if (host_root / candidate.lstrip("/")).is_file():
            return str(host_root / candidate.lstrip("/"))
    return shutil.which("npu-smi")


def read_npu_smi_info(executable: str | None = None, timeout: int = 60) -> NpuSmiInfo:
    """Run `npu-smi info` and parse it; PcbError saying how to do without it when it fails."""
    program = executable or find_npu_smi()
    if program is None:
        raise PcbError(
            "npu-smi not found (looked in /usr/local/bin, /usr/local/sbin and PATH): install the "
            "Ascend driver, or pass the chip by name, e.g. --chip 310P3"
        )
    try:
        result = subprocess.run(
            [program, "info"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PcbError(
            f"`{program} info` could not run ({error}): pass --chip 310P3 or similar"
        ) from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise PcbError(
            f"`{program} info` failed with exit status {result.returncode}: {' / '.join(tail)}; "
            "check the driver (`npu-smi info` as root), or pass --chip 310P3 or similar"
        )
    return parse_npu_smi_info(result.stdout)


def detect_chip(devices: Sequence[int] = (), executable: str | None = None) -> str:
    """--chip auto: the chip name of the chosen devices, read from `npu-smi info`."""
    return chip_from_info(read_npu_smi_info(executable), devices)


def resolve_chip(chip: str, devices: Sequence[int] = (), executable: str | None = None) -> str:
    """A chip name as given, or the detected one for 'auto'."""
    name = normalize_chip(chip)
    return detect_chip(devices, executable) if name == "auto" else name


def card_scope(devices: Sequence[int], info: NpuSmiInfo | None) -> tuple[str, int | None]:
    """('card', card id) when the devices are exactly the chips of one card, else ('chip', None)
    for one device or ('<n> chips', None) for several: the label of their summed throughput."""
    chosen = tuple(sorted(devices))
    if info is not None:
        chips = [info.by_device(d) for d in chosen]
        cards = {c.card for c in chips if c is not None}
        if None not in chips and len(cards) == 1:
            card = cards.pop()
            if info.card_devices(card) == chosen:
                return "card", card
    return ("chip" if len(chosen) == 1 else f"{len(chosen)} chips"), None
