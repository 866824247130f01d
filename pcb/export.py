"""Checkpoint -> ONNX (opset 11, `input_1` -> `output_1`), checked against PyTorch."""

from __future__ import annotations

import hashlib
import io
import platform
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .constants import INPUT_NAME, INPUT_SHAPE, OPSET, OUTPUT_NAME
from .errors import PcbError
from .fileio import atomic_write_bytes, atomic_write_json
from .layout import RunLayout
from .model import PCB
from .provenance import host_name, utc_now

# Exported and PyTorch features must agree to this; both are unit-norm per stripe.
PARITY_TOLERANCE = 1e-4
PARITY_BATCH = 2


@dataclass
class ExportRecord:
    checkpoint: str
    checkpoint_md5: str
    checkpoint_format: str
    onnx: str
    onnx_md5: str
    opset: int
    max_abs_diff: float
    static_models: dict[str, str] = field(default_factory=dict)
    torch_version: str = torch.__version__
    onnx_version: str = ""
    onnxruntime_version: str = ""
    python_version: str = platform.python_version()
    host: str = field(default_factory=host_name)
    timestamp: str = field(default_factory=utc_now)


def onnx_bytes(model: PCB, batch_size: int | None = None, opset: int = OPSET) -> bytes:
    """The model as ONNX bytes: a dynamic batch axis, or a fixed batch_size."""
    example = torch.zeros(batch_size or 1, *INPUT_SHAPE)
    dynamic_axes = None
    if batch_size is None:
        dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that still writes opset 11, which atc needs.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (example,),
            buffer,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def check_onnx(data: bytes, source: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as error:  # the checker raises several types
        raise PcbError(f"{source}: onnx.checker rejected the exported model: {error}") from None


def parity_max_abs_diff(model: PCB, data: bytes, seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch| over one random batch."""
    import onnxruntime as ort

    batch = np.random.default_rng(seed).standard_normal((PARITY_BATCH, *INPUT_SHAPE))
    batch = batch.astype(np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    [actual] = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    if actual.shape != expected.shape:
        raise PcbError(f"ONNX output shape {actual.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(actual - expected).max())


def export_onnx(
    checkpoint: Path,
    layout: RunLayout,
    static_batch_sizes: list[int] | tuple[int, ...] = (),
    opset: int = OPSET,
) -> ExportRecord:
    """Write <run>/model/pcb.onnx (+ pcb_bs<N>.onnx) and export.json; fail on a parity gap."""
    import onnx
    import onnxruntime

    loaded = load_checkpoint(checkpoint)
    print(f"loaded {checkpoint} ({loaded.format}, md5 {loaded.md5})")
    data = onnx_bytes(loaded.model, opset=opset)
    check_onnx(data, str(layout.onnx_path))
    diff = parity_max_abs_diff(loaded.model, data)
    print(f"onnxruntime vs PyTorch on a random batch of {PARITY_BATCH}: max |diff| = {diff:.3g}")
    if not diff < PARITY_TOLERANCE:
        raise PcbError(
            f"exported model disagrees with PyTorch: max |diff| {diff:.3g} >= {PARITY_TOLERANCE}; "
            "the ONNX file was not written. Check the torch and onnxruntime versions."
        )
    static = {}
    for batch_size in static_batch_sizes:
        static_data = onnx_bytes(loaded.model, batch_size=batch_size, opset=opset)
        path = layout.static_onnx_path(batch_size)
        check_onnx(static_data, str(path))
        atomic_write_bytes(path, static_data)
        static[str(batch_size)] = path.name
    atomic_write_bytes(layout.onnx_path, data)
    record = ExportRecord(
        checkpoint=str(checkpoint),
        checkpoint_md5=loaded.md5,
        checkpoint_format=loaded.format,
        onnx=layout.onnx_path.name,
        onnx_md5=hashlib.md5(data).hexdigest(),
        opset=opset,
        max_abs_diff=diff,
        static_models=static,
        onnx_version=onnx.__version__,
        onnxruntime_version=onnxruntime.__version__,
    )
    atomic_write_json(layout.export_record, asdict(record))
    print(f"wrote {layout.onnx_path} (md5 {record.onnx_md5})")
    return record
