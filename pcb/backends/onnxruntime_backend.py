"""onnxruntime on the CPU: the reference backend every accelerator is compared against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..constants import FEATURE_SHAPE, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from ..errors import PcbError
from .base import Backend, resolve_threads

_EXPORT_HINT = "re-run `pcb export` to write a PCB model with input_1 N x 3 x 384 x 128"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    # The numbers the model computes in; a perf record's platform ends with it.
    precision = "fp32"

    def __init__(self) -> None:
        self._session = None
        self._model_path: Path | None = None
        self._fixed_batch: int | None = None
        self.threads = 0

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def model_file(self, model_path: Path) -> Path:
        """The file `load(model_path)` opens: the model itself here, a variant in subclasses."""
        return Path(model_path)

    def load(self, model_path: Path, batch_size: int | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        model_path = self.model_file(model_path)
        if not model_path.is_file():
            raise PcbError(f"ONNX model not found: {model_path}; run `pcb export` first")
        self.threads = resolve_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: warnings would interleave with tqdm
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped pybind errors
            raise PcbError(
                f"onnxruntime cannot load {model_path}: {error}; {_EXPORT_HINT}"
            ) from error
        self._fixed_batch = _check_input(session, model_path, batch_size)
        outputs = [o.name for o in session.get_outputs()]
        if OUTPUT_NAME not in outputs:
            raise PcbError(
                f"model {model_path} has no output {OUTPUT_NAME!r} (outputs: {outputs}); "
                f"{_EXPORT_HINT}"
            )
        self._session = session
        self._model_path = model_path

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise PcbError("onnxruntime backend used before load(): call load(model_path) first")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != INPUT_SHAPE:
            raise PcbError(
                f"batch has shape {tuple(batch.shape)}, expected N x 3 x 384 x 128 float32"
            )
        if self._fixed_batch is not None and batch.shape[0] != self._fixed_batch:
            raise PcbError(
                f"model {self._model_path} has a fixed batch of {self._fixed_batch}, "
                f"got {batch.shape[0]} images: use the dynamic-batch pcb.onnx from `pcb export`"
            )
        feed = {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
        (features,) = self._session.run([OUTPUT_NAME], feed)
        if features.shape != (batch.shape[0], *FEATURE_SHAPE):
            raise PcbError(
                f"model {self._model_path} returned {OUTPUT_NAME} of shape {features.shape}, "
                f"expected ({batch.shape[0]}, {', '.join(map(str, FEATURE_SHAPE))}); "
                f"{_EXPORT_HINT}"
            )
        return features


def _check_input(session, model_path: Path, batch_size: int | None) -> int | None:
    """Fail early on a model that is not PCB's; return its fixed batch size, None if dynamic."""
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise PcbError(
            f"model {model_path} has inputs {names}, expected exactly one named {INPUT_NAME!r}; "
            f"{_EXPORT_HINT}"
        )
    shape = list(inputs[0].shape)
    if len(shape) != 4 or tuple(shape[1:]) != INPUT_SHAPE or inputs[0].type != "tensor(float)":
        raise PcbError(
            f"model {model_path} input {INPUT_NAME} is {inputs[0].type} {shape}, expected "
            f"float N x 3 x 384 x 128; {_EXPORT_HINT}"
        )
    # A symbolic or unknown first dimension is a dynamic batch axis.
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    if fixed is not None and batch_size is not None and batch_size != fixed:
        raise PcbError(
            f"model {model_path} has a fixed batch of {fixed}, asked for {batch_size}: "
            "use the dynamic-batch pcb.onnx or the matching pcb_bs<N>.onnx"
        )
    return fixed
