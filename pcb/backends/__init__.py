"""Backends by name: a string -> class factory whose imports happen only when asked for.

Lazy imports keep `python -m pcb report` (or an Ascend image without onnxruntime) from
paying for, or failing on, runtimes it never uses.
"""

from __future__ import annotations

import importlib

from ..errors import PcbError, did_you_mean
from .base import Backend

# name -> (module, class). ais_bench is not here: it runs whole folders itself.
_REGISTRY: dict[str, tuple[str, str]] = {
    "onnxruntime": ("pcb.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "onnxruntime-int8": ("pcb.backends.onnxruntime_int8_backend", "OnnxRuntimeInt8Backend"),
    "tensorrt": ("pcb.backends.tensorrt_backend", "TensorRTBackend"),
    "torch": ("pcb.torch_backend", "TorchBackend"),
    "torch-bf16": ("pcb.torch_backend", "TorchBf16Backend"),
    "torch-fp16": ("pcb.torch_backend", "TorchFp16Backend"),
}

KNOWN_BACKENDS: tuple[str, ...] = tuple(_REGISTRY)


def create_backend(name: str, **options: object) -> Backend:
    """A fresh, not yet loaded backend called `name`; `options` go to its constructor (the
    TensorRT backend's CUDA `device`)."""
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        known = ", ".join(KNOWN_BACKENDS)
        raise PcbError(
            f"unknown backend {name!r}{did_you_mean(name, KNOWN_BACKENDS)}: use one of {known}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PcbError(
            f"backend {name!r} cannot be imported ({error}): install its runtime, "
            f"e.g. `pip install {name}`, or run the stage in the runtime image"
        ) from error
    backend_class = getattr(module, class_name)
    return backend_class(**options)


__all__ = ["KNOWN_BACKENDS", "Backend", "create_backend"]
