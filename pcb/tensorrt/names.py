"""What TensorRT results are called: the dump/perf/eval name and the report's platform name."""

from __future__ import annotations

from .engine_cache import UNKNOWN
from .trtexec import validate_precision

BACKEND = "tensorrt"
TOOL = "trtexec"
SCOPE = "gpu"
# Words GPU names start with that say nothing about the chip: "Tesla T4" -> "T4".
_VENDOR_WORDS = ("nvidia", "tesla", "geforce", "quadro")


def dump_backend(precision: str) -> str:
    """`tensorrt-<precision>`: the name the dumps, the infer records, the evaluation and the
    perf file go under (<run>/dumps/tensorrt-fp16/, eval/tensorrt-fp16.json, ...)."""
    return f"{BACKEND}-{validate_precision(precision)}"


def dump_backends() -> tuple[str, ...]:
    """Every name `pcb evaluate --backend` may be given for TensorRT dumps."""
    from .trtexec import PRECISIONS

    return tuple(dump_backend(p) for p in PRECISIONS)


def short_gpu_name(device: str) -> str:
    """'Tesla T4' -> 'T4', 'NVIDIA H100 80GB HBM3' -> 'H100-80GB-HBM3'; '' -> 'GPU'."""
    words = device.split()
    while words and words[0].lower() in _VENDOR_WORDS:
        words = words[1:]
    return "-".join(words) or "GPU"


def platform_name(device: str, precision: str) -> str:
    """`<GPU>-trt-<precision>`, the report's column name (e.g. T4-trt-fp16)."""
    known = device if device and device != UNKNOWN else ""
    return f"{short_gpu_name(known)}-trt-{validate_precision(precision)}"
