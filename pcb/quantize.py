"""Static INT8 quantisation of the exported model for onnxruntime on the CPU (QDQ format).

`<run>/model/pcb.onnx` (opset 11, what atc needs) stays the export. A copy is converted to a
newer opset, since per-channel QuantizeLinear / DequantizeLinear need opset 13 or more, and
quantised: weights int8 per output channel, activations uint8 per tensor, with the activation
ranges calibrated (min / max) on preprocessed images of the run. The result is
`<run>/model/pcb_int8.onnx` with `<run>/model/quantize.json` saying how it was made; a call
whose inputs and settings match that record does nothing.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .constants import INPUT_BYTES, INPUT_NAME, INPUT_SHAPE, SPLITS
from .errors import PcbError
from .fileio import atomic_write_bytes, atomic_write_json, read_json
from .layout import RunLayout, int8_model_path
from .provenance import host_name, utc_now
from .record.digest import cached_md5

# Per-channel Q/DQ (an `axis` attribute) needs opset 13; 17 is the newest every onnxruntime
# this project supports runs with all its CPU int8 kernels.
QUANT_OPSET = 17
DEFAULT_CALIBRATION_IMAGES = 64
# Images per calibration run: batches make calibration a few times faster than single images,
# and min / max over a batch equal min / max over its images, so the ranges do not change.
CALIBRATION_BATCH = 8
RECORD_NAME = "quantize.json"
# The per-stripe L2 normalisation at the end: cheap, and quantising it would put its rounding
# straight onto the features, so it stays float32.
FLOAT_TAIL_OPS = ("AveragePool", "ReduceL2", "Div")
# The first convolution reads the 3-channel image. onnxruntime's uint8 x int8 convolution
# packs input channels in groups of 4, and with 3 it runs no faster than float32 (measured:
# 22.3 ms int8 vs 23.7 ms fp32 for conv1 + maxpool at batch 8, 11.6 ms int8 with 4 channels).
# A zero channel with zero weights leaves every output as it was and halves that layer's time.
FIRST_CONV_CHANNELS = 4
PAD_NODE = "pcb_pad_first_conv_input"
# The six stripes' average pool, in the quantised copy, as a Reshape and a ReduceMean over
# each stripe's rows: the same sums (stripes span the whole width), and onnxruntime's
# ReduceMean ran in 0.9 ms where AveragePool with a 4 x 8 window took 10.9 ms at batch 16
# (of 341 ms for the whole int8 model; the fp32 model's pool runs in its blocked layout, 1.9
# ms). Side by side with fp32 (median of 5 interleaved rounds): int8 / fp32 3.30 -> 3.55 at
# batch 16, 3.61 -> 3.71 at batch 64; features unchanged (centred cosine to fp32 0.91929 both).
STRIPE_NODES = ("pcb_stripes_reshape", "pcb_stripes_mean")
# Bumped whenever the recipe below changes, so an old quantised model is not reused.
RECIPE_VERSION = 3


def record_path(layout: RunLayout) -> Path:
    return layout.model_dir / RECORD_NAME


@dataclass
class QuantizeRecord:
    source: str
    source_md5: str
    model: str
    model_md5: str
    opset: int
    calibration_images: int
    calibration_md5: str
    recipe: dict[str, Any]
    onnxruntime_version: str = ""
    host: str = field(default_factory=host_name)
    timestamp: str = field(default_factory=utc_now)


def recipe() -> dict[str, Any]:
    """The settings that decide the quantised model, recorded and compared on every call."""
    return {
        "version": RECIPE_VERSION,
        "format": "QDQ",
        "weights": "int8, symmetric, per channel",
        # uint8 activations with int8 weights is the pair onnxruntime's x86 kernels (VNNI)
        # run fastest; int8 x int8 falls back to slower paths on most x86 CPUs.
        "activations": "uint8, asymmetric, per tensor",
        "calibration": "MinMax",
        "float_ops": list(FLOAT_TAIL_OPS),
        "first_conv_input_channels": FIRST_CONV_CHANNELS,
        "stripe_pool": "Reshape + ReduceMean, float32",
    }


def calibration_bins(layout: RunLayout, count: int = DEFAULT_CALIBRATION_IMAGES) -> list[Path]:
    """Up to `count` preprocessed bins spread evenly over query and gallery, in a fixed order.

    Evenly spaced over the sorted names rather than random, so the same run always calibrates
    on the same images, and both splits (query crops, gallery crops and distractors) count.
    """
    if count <= 0:
        raise PcbError(f"calibration needs at least one image, got count={count}")
    bins = sorted(p for split in SPLITS for p in layout.bins_dir(split).glob("*.bin"))
    bins = [p for p in bins if p.stat().st_size == INPUT_BYTES]
    if not bins:
        raise PcbError(
            f"no preprocessed images under {layout.root / 'bins'} to calibrate the int8 model "
            "on: run `python -m pcb preprocess` for this run first"
        )
    if len(bins) <= count:
        return bins
    picks = np.linspace(0, len(bins) - 1, count).round().astype(int)
    return [bins[i] for i in sorted(set(picks.tolist()))]


def _load_bins(paths: Sequence[Path]) -> np.ndarray:
    return np.stack([np.fromfile(p, dtype=np.float32).reshape(INPUT_SHAPE) for p in paths])


def calibration_md5(paths: Sequence[Path]) -> str:
    """One digest over the calibration images' names and bytes: a re-preprocessed run differs."""
    digest = hashlib.md5()
    for path in paths:
        digest.update(path.name.encode("utf-8"))
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _reader(paths: Sequence[Path]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class BinReader(CalibrationDataReader):
        """Feeds the calibration images in batches of CALIBRATION_BATCH."""

        def __init__(self) -> None:
            self._batches: Iterator[Sequence[Path]] = iter(
                [paths[i : i + CALIBRATION_BATCH] for i in range(0, len(paths), CALIBRATION_BATCH)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._batches, None)
            return None if chunk is None else {INPUT_NAME: _load_bins(chunk)}

    return BinReader()


def pad_first_conv(model: Any, channels: int = FIRST_CONV_CHANNELS) -> Any:
    """`model` with its input zero-padded to `channels` channels in front of the convolution
    that reads it, whose weights get as many zero input channels: the same function."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    if any(node.name == PAD_NODE for node in graph.node):
        return model
    source = graph.input[0].name
    conv = next((n for n in graph.node if n.op_type == "Conv" and n.input[0] == source), None)
    if conv is None:
        raise PcbError(f"no convolution reads the model's input {source!r}: not a PCB export")
    weights = next((t for t in graph.initializer if t.name == conv.input[1]), None)
    if weights is None:
        raise PcbError(f"the first convolution's weights {conv.input[1]!r} are not a constant")
    kernel = numpy_helper.to_array(weights)
    extra = channels - kernel.shape[1]
    if extra <= 0:
        return model
    zeros = np.zeros((kernel.shape[0], extra, *kernel.shape[2:]), dtype=kernel.dtype)
    weights.CopyFrom(numpy_helper.from_array(np.concatenate([kernel, zeros], axis=1), weights.name))
    pads = numpy_helper.from_array(
        np.array([0, 0, 0, 0, 0, extra, 0, 0], dtype=np.int64), f"{PAD_NODE}_pads"
    )
    graph.initializer.append(pads)
    padded = f"{PAD_NODE}_output"
    pad = helper.make_node("Pad", [source, pads.name], [padded], name=PAD_NODE, mode="constant")
    conv.input[0] = padded
    graph.node.insert(list(graph.node).index(conv), pad)
    onnx.checker.check_model(model)
    return model


def pool_stripes_by_reduce_mean(model: Any) -> Any:
    """`model` with its stripe AveragePool (a window as wide as the map, stride = window, no
    padding) replaced by a Reshape to (N, C, stripes, rows x width) and a ReduceMean over the
    last axis: the same function. A model whose pool is not of that kind is returned as is."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    if any(node.name in STRIPE_NODES for node in graph.node):
        return model
    pools = [node for node in graph.node if node.op_type == "AveragePool"]
    if len(pools) != 1:
        return model
    pool = pools[0]
    attributes = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
    kernel = list(attributes.get("kernel_shape", []))
    if (
        len(kernel) != 2
        or list(attributes.get("strides", [])) != kernel
        or any(attributes.get("pads", []))
        or attributes.get("ceil_mode", 0)
        or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
    ):
        return model
    shapes = {
        info.name: [
            d.dim_value if d.HasField("dim_value") else None
            for d in info.type.tensor_type.shape.dim
        ]
        for info in onnx.shape_inference.infer_shapes(model).graph.value_info
    }
    source = shapes.get(pool.input[0])
    if source is None or len(source) != 4 or None in source[2:]:
        return model
    height, width = source[2], source[3]
    if width != kernel[1] or height % kernel[0]:
        return model
    shape = numpy_helper.from_array(
        np.array([0, 0, -1, kernel[0] * width], dtype=np.int64), f"{STRIPE_NODES[0]}_shape"
    )
    graph.initializer.append(shape)
    rows = f"{STRIPE_NODES[0]}_output"
    reshape = helper.make_node("Reshape", [pool.input[0], shape.name], [rows], name=STRIPE_NODES[0])
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset >= 18:  # axes became an input in opset 18
        axes = numpy_helper.from_array(np.array([3], dtype=np.int64), f"{STRIPE_NODES[1]}_axes")
        graph.initializer.append(axes)
        mean = helper.make_node(
            "ReduceMean", [rows, axes.name], list(pool.output), name=STRIPE_NODES[1], keepdims=1
        )
    else:
        mean = helper.make_node(
            "ReduceMean", [rows], list(pool.output), name=STRIPE_NODES[1], axes=[3], keepdims=1
        )
    at = list(graph.node).index(pool)
    graph.node.remove(pool)
    graph.node.insert(at, mean)
    graph.node.insert(at, reshape)
    onnx.checker.check_model(model)
    return model


def quantize_onnx(
    source: Path, target: Path, calibration: Sequence[Path], opset: int = QUANT_OPSET
) -> None:
    """source (float32 ONNX) -> target (QDQ int8), calibrated on `calibration` bins."""
    try:
        import onnx
        from onnx import version_converter
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as error:
        raise PcbError(
            f"quantising needs onnx and onnxruntime ({error}): `pip install onnx onnxruntime`, "
            "or run `python -m pcb quantize` where the export stage runs (the export image)"
        ) from error

    if not calibration:
        raise PcbError("no calibration images given: pass preprocessed .bin files")
    model = onnx.load(str(source))
    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if current < opset:
        try:
            model = version_converter.convert_version(model, opset)
        except Exception as error:  # the converter raises several types
            raise PcbError(
                f"cannot convert {source} from opset {current} to {opset} for quantisation "
                f"({error}); re-export it with `python -m pcb export` or a newer onnx"
            ) from None
    model = pool_stripes_by_reduce_mean(pad_first_conv(model))
    excluded = [
        node.name
        for node in model.graph.node
        if node.op_type in FLOAT_TAIL_OPS or node.name in STRIPE_NODES
    ]
    with tempfile.TemporaryDirectory(prefix="pcb-quantize-") as scratch:
        converted = Path(scratch) / "converted.onnx"
        prepared = Path(scratch) / "prepared.onnx"
        quantized = Path(scratch) / "quantized.onnx"
        onnx.save(model, str(converted))
        # Folds constants and infers every shape: the quantiser needs shapes for per-channel
        # weights, and a graph without leftover Identity nodes quantises into fewer Q/DQ pairs.
        quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            _reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
        )
        atomic_write_bytes(Path(target), quantized.read_bytes())


def _previous(layout: RunLayout) -> dict[str, Any]:
    try:
        payload = read_json(record_path(layout))
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def ensure_quantized(
    layout: RunLayout,
    calibration_images: int | None = None,
    opset: int = QUANT_OPSET,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Write `<run>/model/pcb_int8.onnx` unless it is current; return its path.

    Current means quantize.json names the same float model (md5), the same calibration images
    (names and bytes), opset and recipe, and the int8 file still has the md5 it recorded.
    `calibration_images` None keeps the count quantize.json records (so `infer` keeps what
    `quantize --calibration-images N` made), else DEFAULT_CALIBRATION_IMAGES.
    """
    import onnxruntime

    source = layout.onnx_path
    if not source.is_file():
        raise PcbError(f"ONNX model not found: {source}; run `python -m pcb export` first")
    target = int8_model_path(source)
    previous = _previous(layout)
    if calibration_images is None:
        recorded = previous.get("calibration_images")
        valid = isinstance(recorded, int) and recorded > 0
        calibration_images = recorded if valid else DEFAULT_CALIBRATION_IMAGES
    bins = calibration_bins(layout, calibration_images)
    wanted = {
        "source_md5": cached_md5(source, layout.root),
        "opset": opset,
        "calibration_images": len(bins),
        "calibration_md5": calibration_md5(bins),
        "recipe": recipe(),
        "onnxruntime_version": onnxruntime.__version__,
    }
    if (
        not force
        and target.is_file()
        and all(previous.get(key) == value for key, value in wanted.items())
        and previous.get("model_md5") == cached_md5(target, layout.root)
    ):
        if not quiet:
            print(f"int8 model {target} is current (same model, calibration and recipe)")
        return target
    if not quiet:
        print(f"quantising {source} -> {target} (calibrating on {len(bins)} images)")
    quantize_onnx(source, target, bins, opset=opset)
    record = QuantizeRecord(
        source=source.name,
        source_md5=wanted["source_md5"],
        model=target.name,
        model_md5=cached_md5(target, layout.root),
        opset=opset,
        calibration_images=len(bins),
        calibration_md5=wanted["calibration_md5"],
        recipe=wanted["recipe"],
        onnxruntime_version=onnxruntime.__version__,
    )
    atomic_write_json(record_path(layout), asdict(record))
    if not quiet:
        print(f"wrote {target} and {record_path(layout)}")
    return target


def cosine_agreement(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-image cosine similarity of two feature sets (N x ...), computed in float64."""
    a = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    b = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if a.shape != b.shape:
        raise PcbError(f"feature sets differ in shape: {a.shape} vs {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)


def centred_cosine_agreement(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-image cosine of two feature sets after taking out the reference's mean feature.

    Distances between images never see a component every image shares. When that component
    dominates (an untrained network's features are nearly one vector), the plain cosine is
    close to 1 whatever the error; this one measures the error against what tells images
    apart."""
    a = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    b = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    mean = a.mean(axis=0)
    return cosine_agreement(a - mean, b - mean)


def mean_cosine_between_images(features: np.ndarray, limit: int = 1000) -> float:
    """Mean cosine between the features of different images (of the first `limit`): near 1
    means every image gets nearly the same feature."""
    a = np.asarray(features[:limit], dtype=np.float64).reshape(min(len(features), limit), -1)
    if len(a) < 2:
        raise PcbError("the cosine between images needs at least two images")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    pairs = a @ a.T
    return float((pairs.sum() - np.trace(pairs)) / (len(a) * (len(a) - 1)))
