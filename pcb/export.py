"""Checkpoint -> ONNX (opset 11, `input_1` -> `output_1`), checked against PyTorch."""

from __future__ import annotations

import hashlib
import io
import platform
import warnings
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .constants import INPUT_NAME, INPUT_SHAPE, OPSET, OUTPUT_NAME
from .errors import PcbError
from .fileio import atomic_write_bytes, atomic_write_json, read_json
from .layout import RunLayout
from .provenance import host_name, utc_now
from .record.digest import bytes_digest, cached_md5, digest_store

if TYPE_CHECKING:
    from .model import PCB

# torch is imported where a model is built, not here: importing it costs about a second,
# which an export that finds its model current (`invoke full` run again) need not pay.

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
    torch_version: str = field(default_factory=lambda: _torch_version())
    onnx_version: str = ""
    onnxruntime_version: str = ""
    python_version: str = platform.python_version()
    host: str = field(default_factory=host_name)
    timestamp: str = field(default_factory=utc_now)


def _torch_version() -> str:
    """torch's version as torch.__version__ gives it, read without importing torch."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ""


def onnx_bytes(model: PCB, batch_size: int | None = None, opset: int = OPSET) -> bytes:
    """The model as ONNX bytes: a dynamic batch axis, or a fixed batch_size."""
    import torch

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
    import torch

    batch = np.random.default_rng(seed).standard_normal((PARITY_BATCH, *INPUT_SHAPE))
    batch = batch.astype(np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    [actual] = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    if actual.shape != expected.shape:
        raise PcbError(f"ONNX output shape {actual.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(actual - expected).max())


def _write_model(path: Path, data: bytes, layout: RunLayout) -> str:
    """Write a model and remember its digests from the bytes written; returns its md5.

    The manifest and the next stages then find the model's digests in the run's cache
    instead of reading back 100 MB.
    """
    atomic_write_bytes(path, data)
    md5 = hashlib.md5(data).hexdigest()
    digest_store(layout.root).remember(path, bytes_digest(data), md5)
    return md5


def current_export(
    checkpoint: Path,
    layout: RunLayout,
    static_batch_sizes: list[int] | tuple[int, ...] = (),
    opset: int = OPSET,
) -> ExportRecord | None:
    """export.json's record when the files it describes are what this export would write.

    That is: the same checkpoint (md5), opset, static batch sizes and torch version, and
    pcb.onnx still has the md5 recorded (static models must exist). The export is
    deterministic (tests/test_export.py checks it byte for byte), so exporting again would
    write the same bytes.
    """
    checkpoint = Path(checkpoint)
    try:
        previous = read_json(layout.export_record)
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or not checkpoint.is_file():
        return None
    wanted: dict[str, Any] = {
        "opset": opset,
        "torch_version": _torch_version(),
        "onnx": layout.onnx_path.name,
        "static_models": {
            str(b): layout.static_onnx_path(b).name for b in sorted(set(static_batch_sizes))
        },
    }
    if any(previous.get(key) != value for key, value in wanted.items()):
        return None
    if not all((layout.model_dir / name).is_file() for name in wanted["static_models"].values()):
        return None
    if not layout.onnx_path.is_file() or previous.get("onnx_md5") != cached_md5(
        layout.onnx_path, layout.root
    ):
        return None
    if previous.get("checkpoint_md5") != cached_md5(checkpoint, layout.root):
        return None
    known = {f.name for f in fields(ExportRecord)}
    try:
        return ExportRecord(**{k: v for k, v in previous.items() if k in known})
    except TypeError:
        return None  # a record missing fields (an older version): export again


def export_onnx(
    checkpoint: Path,
    layout: RunLayout,
    static_batch_sizes: list[int] | tuple[int, ...] = (),
    opset: int = OPSET,
    force: bool = False,
) -> ExportRecord:
    """Write <run>/model/pcb.onnx (+ pcb_bs<N>.onnx) and export.json; fail on a parity gap.

    Does nothing when export.json shows this export already written (`current_export`),
    unless `force`.
    """
    if not force:
        current = current_export(checkpoint, layout, static_batch_sizes, opset)
        if current is not None:
            print(
                f"{layout.onnx_path} is current (checkpoint md5 {current.checkpoint_md5}, "
                f"opset {opset}, onnx md5 {current.onnx_md5}): not exported again"
            )
            return current
    import onnx
    import onnxruntime

    from .checkpoint import load_checkpoint

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
        _write_model(path, static_data, layout)
        static[str(batch_size)] = path.name
    onnx_md5 = _write_model(layout.onnx_path, data, layout)
    record = ExportRecord(
        checkpoint=str(checkpoint),
        checkpoint_md5=loaded.md5,
        checkpoint_format=loaded.format,
        onnx=layout.onnx_path.name,
        onnx_md5=onnx_md5,
        opset=opset,
        max_abs_diff=diff,
        static_models=static,
        onnx_version=onnx.__version__,
        onnxruntime_version=onnxruntime.__version__,
    )
    atomic_write_json(layout.export_record, asdict(record))
    print(f"wrote {layout.onnx_path} (md5 {record.onnx_md5})")
    return record
