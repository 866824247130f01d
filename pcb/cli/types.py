"""The argument types of the stage options: text in, a checked value out, or argparse's error
naming what was expected (argparse prints it with the stage's usage and exits 2)."""

from __future__ import annotations

import argparse
import re
from typing import Any, Callable

from ..errors import PcbError


def parse_batch_sizes(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]; each a positive integer."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            size = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"batch size {part!r} is not an integer: give positive integers such as 1,4,8"
            ) from None
        if size <= 0:
            raise argparse.ArgumentTypeError(
                f"batch size {size} is not positive: give positive integers such as 1,4,8"
            )
        sizes.append(size)
    if not sizes:
        raise argparse.ArgumentTypeError("no batch size given: use for example 1,4,8")
    return sizes


def _number(text: str, convert: Callable[[str], Any], kind: str, fits: Callable, bound: str) -> Any:
    """`text` as a number of `kind` (e.g. "an integer") within `bound` (e.g. "0 or more")."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not fits(value):
        raise argparse.ArgumentTypeError(f"expected {bound}, got {value}")
    return value


def positive_int(text: str) -> int:
    positive = "a positive integer"
    return _number(text, int, positive, lambda value: value > 0, positive)


def non_negative_int(text: str) -> int:
    return _number(text, int, "an integer", lambda value: value >= 0, "0 or more")


def non_negative_float(text: str) -> float:
    return _number(text, float, "a number", lambda value: value >= 0, "0 or more")


def threshold_arg(text: str) -> float:
    fraction = "a number in (0, 1]"
    return _number(text, float, fraction, lambda value: 0.0 < value <= 1.0, fraction)


def backend_name(text: str) -> str:
    """A backend's dump / record name: onnxruntime, Ascend310P3-ais_bench, ..."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(
            f"backend name {text!r}: letters, digits, '_', '.' and '-' only, e.g. "
            "onnxruntime or Ascend310P3-ais_bench"
        )
    return text


def chip_arg(text: str) -> str:
    from ..ascend.chips import normalize_chip

    try:
        return normalize_chip(text)
    except PcbError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def devices_arg(text: str) -> tuple[int, ...]:
    from ..ascend.chips import parse_devices

    try:
        return parse_devices(text)
    except PcbError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
