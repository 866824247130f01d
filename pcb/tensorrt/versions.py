"""TensorRT versions as trtexec writes them, and which of them the stages support.

trtexec states its version in three shapes, all read here (tests/fixtures/real/trtexec):

- the banner `&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # ...` (8.0 and later; 10.7 and
  later append ` [b<build>]`), a packed number: major*1000 + minor*100 + patch up to 9.x
  (`kNV_TENSORRT_VERSION_IMPL`, include/NvInferRuntimeBase.h), major*10000 + minor*100 + patch
  from 10.0 (`NV_TENSORRT_VERSION_INT`): 8003 = 8.0.3, 8601 = 8.6.1, 100001 = 10.0.1;
- the line `TensorRT version: 8.6.1` (8.2 and later) or `TensorRT version: 8003` (8.0 printed
  getInferLibVersion(), the packed number; samples/trtexec/trtexec.cpp of release/8.0);
- nothing at all before 8.0 (TensorRT 7's banner is `&&&& RUNNING TensorRT.trtexec # ...`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PcbError

_DOTTED = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*$")


@dataclass(frozen=True, order=True)
class TensorRTVersion:
    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)

    @classmethod
    def parse(cls, text: str | int) -> TensorRTVersion:
        """`8.6.1`, `8.6.1.6`, `10.0`, or a packed number (`8003`, `8601`, `100001`)."""
        value = str(text).strip()
        dotted = _DOTTED.match(value)
        if dotted:
            return cls(int(dotted.group(1)), int(dotted.group(2)), int(dotted.group(3) or 0))
        if value.isdigit():
            return decode_packed(int(value))
        raise PcbError(
            f"TensorRT version {text!r} is neither X.Y[.Z] nor a packed number such as 8601"
        )


def decode_packed(number: int) -> TensorRTVersion:
    """8003 -> 8.0.3, 8601 -> 8.6.1, 100001 -> 10.0.1, 101601 -> 10.16.1.

    Six digits tell TensorRT 10's scheme (two digits of minor: 10.16 exists); four, the older.
    """
    if number >= 100000:
        return TensorRTVersion(number // 10000, number // 100 % 100, number % 100)
    if number >= 1000:
        return TensorRTVersion(number // 1000, number // 100 % 10, number % 100)
    raise PcbError(f"TensorRT version number {number} is too small to be a packed version")


# The flag table (flags.py) starts at the 7.0 sources; TensorRT 11 dropped --calib and stopped
# parsing --fp16/--int8 (samples/common/sampleOptions.cpp of release/11.0).
FIRST_SUPPORTED = TensorRTVersion(7, 0, 0)
FIRST_UNSUPPORTED = TensorRTVersion(11, 0, 0)


def require_supported(version: TensorRTVersion) -> TensorRTVersion:
    """The version itself, or a PcbError naming it and what to use instead."""
    if version >= FIRST_UNSUPPORTED:
        raise PcbError(
            f"trtexec is TensorRT {version}: TensorRT 11 dropped trtexec's --calib and the "
            "--fp16/--int8 flags (strongly typed networks only), which these stages rely on. "
            'Use a TensorRT 7.0-10.x trtexec: `trt_image: "10.0"` in invoke.yaml builds the '
            "tensorrt image on nvcr.io/nvidia/tensorrt:24.05-py3 (TensorRT 10.0.1)"
        )
    if version < FIRST_SUPPORTED:
        raise PcbError(
            f"trtexec is TensorRT {version}: the flags these stages pass were checked against "
            "trtexec's sources of TensorRT 7.0 to 10.x only (docs/tensorrt.md). Use a TensorRT "
            "7.0-10.x trtexec, e.g. the tensorrt image (`invoke build --image tensorrt`)"
        )
    return version
