"""The Ascend inference chips this project converts for, and the names derived from a chip:
atc's --soc_version, the report's platform column, the dump folder of a backend."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Union

from ..errors import PcbError, did_you_mean

# atc --soc_version values of the Ascend inference chips (the 310 family). `npu-smi info` names
# them without the "Ascend" prefix, as does the guide ("${chip_name}", e.g. 310P3).
INFERENCE_CHIPS = (
    "310",
    "310B1",
    "310B2",
    "310B3",
    "310B4",
    "310P1",
    "310P2",
    "310P3",
    "310P4",
    "310P5",
    "310P7",
)
AUTO = "auto"
SOC_PREFIX = "Ascend"

# Chips on one card of the usual product, for the guide's per-card figures when a card cannot be
# read from npu-smi: an Atlas 300I (model 3000) holds four 310s, an Atlas 300I Pro one 310P3
# (the 300I Duo holds two: pass --chips-per-card 2), an Atlas 200I A2 one 310B.
DEFAULT_CHIPS_PER_CARD = {"310": 4}

Devices = Union[str, int, Sequence[Union[int, str]]]


def known_chips_text() -> str:
    return ", ".join(INFERENCE_CHIPS)


def normalize_chip(text: str, allow_auto: bool = True) -> str:
    """'Ascend310P3', '310p3' or ' 310P3 ' -> '310P3'; 'auto' stays 'auto' (when allowed).

    Anything else is refused with the list of known chips, since atc would only fail later
    with a less direct message about --soc_version."""
    raw = str(text).strip()
    if allow_auto and raw.lower() == AUTO:
        return AUTO
    name = raw[len(SOC_PREFIX) :] if raw.lower().startswith(SOC_PREFIX.lower()) else raw
    name = name.strip().upper()
    if name in INFERENCE_CHIPS:
        return name
    auto = f", or {AUTO} to read it from `npu-smi info`" if allow_auto else ""
    raise PcbError(
        f"unknown Ascend chip {raw!r}{did_you_mean(name, INFERENCE_CHIPS)}: expected one of "
        f"{known_chips_text()}{auto} "
        "(the Name column of `npu-smi info`, e.g. 310P3)"
    )


def soc_version(chip: str) -> str:
    """atc's --soc_version: 'Ascend' + the chip name."""
    return SOC_PREFIX + normalize_chip(chip, allow_auto=False)


def platform_name(chip: str, aoe: bool = False, dynamic: bool = False) -> str:
    """The report's column: Ascend310P3, Ascend310P3-aoe (the guide's 310P_aoe column),
    Ascend310P3-dynamic (a dynamic-batch model, timed apart from the static ones)."""
    name = soc_version(chip)
    if aoe:
        name += "-aoe"
    if dynamic:
        name += "-dynamic"
    return name


def backend_key(
    chip: str, tool: str = "ais_bench", aoe: bool = False, dynamic: bool = False
) -> str:
    """The name of a backend's dump folder, eval record and perf file: <platform>-<tool>."""
    return f"{platform_name(chip, aoe, dynamic)}-{tool}"


def device_platform(platform: str, device: int) -> str:
    """One chip's column when a figure sums several chips: Ascend310P3-dev1."""
    return f"{platform}-dev{device}"


def parse_devices(value: Devices) -> tuple[int, ...]:
    """'0' / '0,1,2,3' / 2 / [0, 1] -> (0, 1, ...): NPU device ids, each once."""
    if isinstance(value, bool):
        raise PcbError(f"NPU devices {value!r}: give ids such as 0 or 0,1,2,3")
    if isinstance(value, int):
        parts: list = [value]
    elif isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    else:
        parts = list(value)
    ids = []
    for part in parts:
        text = str(part).strip()
        if isinstance(part, bool) or not text.isdigit():
            raise PcbError(
                f"NPU device id {part!r} is not a non-negative integer: give ids such as 0 or "
                "0,1,2,3 (`ls /dev/davinci*` lists them)"
            )
        ids.append(int(text))
    if not ids:
        raise PcbError("no NPU device given: use for example --devices 0 or --devices 0,1,2,3")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise PcbError(f"NPU device(s) {repeated} given more than once: name each device once")
    return tuple(ids)


def default_chips_per_card(chip: str) -> int:
    return DEFAULT_CHIPS_PER_CARD.get(normalize_chip(chip, allow_auto=False), 1)
