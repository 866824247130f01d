"""onnxruntime on the CPU with the statically quantised INT8 model (`pcb quantize`).

The same session and checks as the float32 backend; only the file differs: given the run's
pcb.onnx it opens pcb_int8.onnx beside it, which `pcb.quantize.ensure_quantized` writes.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PcbError
from ..layout import int8_model_path
from .onnxruntime_backend import OnnxRuntimeBackend


class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    name = "onnxruntime-int8"
    precision = "int8"

    def model_file(self, model_path: Path) -> Path:
        path = int8_model_path(Path(model_path))
        if not path.is_file():
            raise PcbError(
                f"int8 model not found: {path}; run `python -m pcb quantize --run <run>` (or "
                "infer / perf with --precision int8, which quantise first)"
            )
        return path
