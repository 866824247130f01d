"""TensorRT as an in-process Backend: run a saved engine (the one trtexec built and timed).

Loads a serialized engine, not the ONNX: the accuracy figure must come from the very engine the
throughput figure came from. TensorRT 8.5+ tensor API (the image has TensorRT 10): set the
input shape, bind device addresses, `execute_async_v3` on a stream. Buffers are allocated
once, for the engine's largest batch; copies go through `cudart` (ctypes). `tensorrt` is
imported only in load(), so importing this module needs neither TensorRT nor a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..constants import FEATURE_SHAPE, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from ..errors import PcbError
from .base import Backend

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_REBUILD_HINT = (
    "delete the run's engines/tensorrt folder and re-run `python -m pcb trt-perf` (or "
    "trt-infer) in this image, so the engine is built by this TensorRT on this GPU"
)


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as error:
        raise PcbError(
            f"the TensorRT Python bindings are not importable ({error}): run the stage in the "
            "tensorrt image (`invoke trt`), which has them"
        ) from error
    return tensorrt


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self._trt: Any = None
        self._cuda: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream = 0
        self._input_ptr = 0
        self._output_ptr = 0
        self._max_batch = 0
        self._output_dtype: Any = np.float32
        self._engine_path: Path | None = None

    def version(self) -> str:
        trt = self._trt or import_tensorrt()
        return str(trt.__version__)

    def load(self, model_path: Path, batch_size: int | None = None, threads: int = 0) -> None:
        """Deserialize `model_path` (a saved engine); `threads` has no meaning on a GPU."""
        from .cudart import CudaRuntime

        path = Path(model_path)
        if path.suffix == ".onnx":
            raise PcbError(
                f"the tensorrt backend runs a saved engine, not {path}: build one with "
                "`python -m pcb trt-perf` or let `python -m pcb trt-infer` build it"
            )
        if not path.is_file():
            raise PcbError(f"TensorRT engine not found: {path}; run `python -m pcb trt-perf`")
        trt = import_tensorrt()
        cuda = CudaRuntime.load()
        cuda.set_device(self.device)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise PcbError(
                f"TensorRT {trt.__version__} cannot load the engine {path} (built by another "
                f"TensorRT version or for another GPU?): {_REBUILD_HINT}"
            )
        if not hasattr(engine, "num_io_tensors"):
            raise PcbError(
                f"TensorRT {trt.__version__} is older than 8.5, whose tensor API this backend "
                "uses: use the tensorrt image (TensorRT 10)"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if sorted(names) != sorted([INPUT_NAME, OUTPUT_NAME]):
            raise PcbError(
                f"engine {path} has tensors {names}, expected {INPUT_NAME} and {OUTPUT_NAME}: "
                f"it is not PCB's; {_REBUILD_HINT}"
            )
        _, _, max_shape = engine.get_tensor_profile_shape(INPUT_NAME, 0)
        max_batch = int(max_shape[0])
        if tuple(int(d) for d in max_shape[1:]) != INPUT_SHAPE or max_batch <= 0:
            raise PcbError(
                f"engine {path} takes {INPUT_NAME} up to {tuple(max_shape)}, expected "
                f"N x 3 x 384 x 128; {_REBUILD_HINT}"
            )
        if batch_size is not None and batch_size > max_batch:
            raise PcbError(
                f"engine {path} runs at most {max_batch} images a batch, asked for {batch_size}: "
                "use a smaller --batch-size or build the engine for this batch (trt-infer does)"
            )
        self.close()
        self._trt, self._cuda, self._engine = trt, cuda, engine
        self._context = engine.create_execution_context()
        self._output_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(OUTPUT_NAME)))
        self._max_batch = max_batch
        self._stream = cuda.stream_create()
        input_bytes = max_batch * int(np.prod(INPUT_SHAPE)) * 4
        output_bytes = max_batch * int(np.prod(FEATURE_SHAPE)) * self._output_dtype.itemsize
        self._input_ptr = cuda.malloc(input_bytes)
        self._output_ptr = cuda.malloc(output_bytes)
        self._engine_path = path

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._context is None:
            raise PcbError("tensorrt backend used before load(): call load(engine_path) first")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != INPUT_SHAPE:
            raise PcbError(
                f"batch has shape {tuple(batch.shape)}, expected N x 3 x 384 x 128 float32"
            )
        # Larger than the engine's profile: in pieces, so a caller's batch size never fails.
        pieces = [
            self._run_piece(batch[start : start + self._max_batch])
            for start in range(0, batch.shape[0], self._max_batch)
        ]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _run_piece(self, batch: np.ndarray) -> np.ndarray:
        count = batch.shape[0]
        host_in = np.ascontiguousarray(batch, dtype=np.float32)
        host_out = np.empty((count, *FEATURE_SHAPE), dtype=self._output_dtype)
        context, cuda = self._context, self._cuda
        if not context.set_input_shape(INPUT_NAME, (count, *INPUT_SHAPE)):
            raise PcbError(f"the engine refused input shape {(count, *INPUT_SHAPE)}")
        out_shape = tuple(context.get_tensor_shape(OUTPUT_NAME))
        if out_shape != (count, *FEATURE_SHAPE):
            raise PcbError(
                f"engine {self._engine_path} gives {OUTPUT_NAME} of shape {out_shape}, expected "
                f"({count}, {', '.join(map(str, FEATURE_SHAPE))}); {_REBUILD_HINT}"
            )
        context.set_tensor_address(INPUT_NAME, self._input_ptr)
        context.set_tensor_address(OUTPUT_NAME, self._output_ptr)
        cuda.to_device(self._input_ptr, host_in, self._stream)
        if not context.execute_async_v3(self._stream):
            raise PcbError(f"TensorRT failed to run engine {self._engine_path} (see its log)")
        cuda.to_host(host_out, self._output_ptr, self._stream)
        cuda.synchronize(self._stream)
        return host_out.astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the device buffers and the stream (also done when the process exits)."""
        if self._cuda is not None:
            self._cuda.free(self._input_ptr)
            self._cuda.free(self._output_ptr)
            self._cuda.stream_destroy(self._stream)
        self._input_ptr = self._output_ptr = self._stream = 0
        self._context = self._engine = None
