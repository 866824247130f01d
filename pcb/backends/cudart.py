"""The handful of CUDA runtime calls TensorRT inference needs, through ctypes.

Why not pycuda or cuda-python: NVIDIA's TensorRT image ships neither (its samples install them
on demand), and both would be one more locked, CUDA-version-specific wheel in the image. Every
TensorRT install has libcudart, since TensorRT itself links against it, and five functions of
it are enough: set the device, allocate, copy, run on a stream, free. Loaded only when called.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Sequence

import numpy as np

from ..errors import PcbError

# cudaMemcpyKind
HOST_TO_DEVICE = 1
DEVICE_TO_HOST = 2

_LIBRARY_NAMES = ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0")
_LIBRARY_GLOBS = (
    "/usr/local/cuda/lib64/libcudart.so*",
    "/usr/local/cuda/targets/*/lib/libcudart.so*",
    "/usr/local/cuda-*/lib64/libcudart.so*",
)


def _candidates() -> list[str]:
    found = list(_LIBRARY_NAMES)
    for pattern in _LIBRARY_GLOBS:
        found += sorted(glob.glob(pattern), reverse=True)
    # pip's nvidia-cuda-runtime wheel (a TensorRT installed from PyPI brings it).
    try:
        import nvidia.cuda_runtime as runtime  # type: ignore[import-not-found]

        for root in getattr(runtime, "__path__", []):
            found += sorted(glob.glob(os.path.join(root, "lib", "libcudart.so*")))
    except ImportError:
        pass
    return found


class CudaRuntime:
    """libcudart, loaded once; every call checks its status and raises PcbError on failure."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._lib = library
        c_void_p, c_size_t, c_int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        signatures = {
            "cudaSetDevice": [c_int],
            "cudaMalloc": [ctypes.POINTER(c_void_p), c_size_t],
            "cudaFree": [c_void_p],
            "cudaMemcpyAsync": [c_void_p, c_void_p, c_size_t, c_int, c_void_p],
            "cudaStreamCreate": [ctypes.POINTER(c_void_p)],
            "cudaStreamSynchronize": [c_void_p],
            "cudaStreamDestroy": [c_void_p],
            "cudaRuntimeGetVersion": [ctypes.POINTER(c_int)],
        }
        for name, argtypes in signatures.items():
            function = getattr(library, name)
            function.argtypes = argtypes
            function.restype = c_int
        library.cudaGetErrorString.argtypes = [c_int]
        library.cudaGetErrorString.restype = ctypes.c_char_p

    @classmethod
    def load(cls, candidates: Sequence[str] | None = None) -> CudaRuntime:
        tried = []
        for name in candidates or _candidates():
            try:
                return cls(ctypes.CDLL(name))
            except OSError as error:
                tried.append(f"{name} ({error})")
        raise PcbError(
            "the CUDA runtime library (libcudart) could not be loaded; tried: "
            + "; ".join(tried[:6])
            + ". Run the stage in the tensorrt image with a GPU (`invoke trt`), or add the "
            "CUDA library folder to LD_LIBRARY_PATH"
        )

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            message = self._lib.cudaGetErrorString(status)
            text = message.decode(errors="replace") if message else "unknown error"
            raise PcbError(
                f"CUDA {what} failed: {text} (error {status}). Check that the GPU is visible "
                "(nvidia-smi in the container) and that the driver supports this CUDA"
            )

    def set_device(self, device: int) -> None:
        self._check(self._lib.cudaSetDevice(device), f"cudaSetDevice({device})")

    def version(self) -> int:
        value = ctypes.c_int()
        self._check(self._lib.cudaRuntimeGetVersion(ctypes.byref(value)), "version query")
        return value.value

    def malloc(self, nbytes: int) -> int:
        pointer = ctypes.c_void_p()
        self._check(self._lib.cudaMalloc(ctypes.byref(pointer), nbytes), f"cudaMalloc({nbytes})")
        return int(pointer.value or 0)

    def free(self, pointer: int) -> None:
        if pointer:
            self._check(self._lib.cudaFree(ctypes.c_void_p(pointer)), "cudaFree")

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self._check(self._lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return int(stream.value or 0)

    def stream_destroy(self, stream: int) -> None:
        if stream:
            self._check(self._lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def synchronize(self, stream: int) -> None:
        self._check(
            self._lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize"
        )

    def to_device(self, pointer: int, array: np.ndarray, stream: int) -> None:
        """Copy a C-contiguous host array to device memory (asynchronous on `stream`: keep
        `array` alive until the stream is synchronised)."""
        if not array.flags.c_contiguous:
            raise PcbError("internal: host array for the GPU copy must be C-contiguous")
        self._check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(pointer),
                ctypes.c_void_p(array.ctypes.data),
                array.nbytes,
                HOST_TO_DEVICE,
                ctypes.c_void_p(stream),
            ),
            "host-to-device copy",
        )

    def to_host(self, array: np.ndarray, pointer: int, stream: int) -> None:
        if not array.flags.c_contiguous or not array.flags.writeable:
            raise PcbError("internal: host array for the GPU copy must be writable, contiguous")
        self._check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(array.ctypes.data),
                ctypes.c_void_p(pointer),
                array.nbytes,
                DEVICE_TO_HOST,
                ctypes.c_void_p(stream),
            ),
            "device-to-host copy",
        )
