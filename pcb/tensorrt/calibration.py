"""The int8 calibration cache, from preprocessed Market-1501 bins, via TensorRT's calibrator.

trtexec has no calibrator of its own (given --int8 alone it invents scales), so the scales are
computed here with the TensorRT Python API (IInt8EntropyCalibrator2, TensorRT's default) and
written as a calibration cache that `trtexec --int8 --calib=<cache>` then reads:

    <run>/engines/tensorrt/int8/calibration.cache   (+ calibration.json, what made it)

Images are spread evenly over the gallery and the query bins (a deterministic choice, so two
runs calibrate alike). They are the evaluation images themselves: the pipeline preprocesses no
training split, and the guide published no int8 figure to compare with; docs/tensorrt.md says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..constants import INPUT_NAME, INPUT_SHAPE, SPLITS
from ..errors import PcbError
from ..fileio import atomic_write_bytes, atomic_write_json, file_md5, read_record
from ..infer import load_bin, read_stems, require_model
from ..layout import RunLayout
from ..provenance import stamp
from .engine_cache import (
    CALIBRATION_BATCH,
    CALIBRATION_IMAGES,
    calibration_cache_path,
    calibration_record_path,
)

DEFAULT_IMAGES = CALIBRATION_IMAGES
DEFAULT_BATCH = CALIBRATION_BATCH
ALGORITHM = "entropy2"


def pick_images(stems_by_split: Mapping[str, Sequence[str]], count: int) -> list[tuple[str, str]]:
    """`count` (split, stem) pairs spread evenly over gallery then query, in a fixed order."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise PcbError(f"calibration image count must be a positive integer, got {count!r}")
    pool = [
        (split, stem) for split in ("gallery", "query") for stem in stems_by_split.get(split, ())
    ]
    if not pool:
        raise PcbError("no preprocessed images to calibrate with: run `pcb preprocess` first")
    count = min(count, len(pool))
    # i * len // count: strictly increasing, so no image is picked twice.
    return [pool[i * len(pool) // count] for i in range(count)]


def usable(picks: Sequence[tuple[str, str]], batch_size: int) -> list[tuple[str, str]]:
    """Whole batches only: TensorRT's calibrator takes batches of one fixed size."""
    if batch_size <= 0:
        raise PcbError(f"calibration batch size must be positive, got {batch_size}")
    whole = len(picks) // batch_size * batch_size
    if whole == 0:
        raise PcbError(
            f"{len(picks)} calibration images do not fill one batch of {batch_size}: "
            "lower --batch-size or preprocess more images"
        )
    return list(picks[:whole])


def picks_md5(picks: Sequence[tuple[str, str]]) -> str:
    text = "\n".join(f"{split}/{stem}" for split, stem in picks)
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def batches(
    layout: RunLayout, picks: Sequence[tuple[str, str]], batch_size: int
) -> Iterator[np.ndarray]:
    """batch_size x 3 x 384 x 128 float32 arrays of the picked bins, in order."""
    for start in range(0, len(picks) - batch_size + 1, batch_size):
        chunk = picks[start : start + batch_size]
        yield np.stack([load_bin(layout.bins_dir(split) / f"{stem}.bin") for split, stem in chunk])


@dataclass(frozen=True)
class CalibrationSpec:
    """What decides the cache's scales; a cache whose record differs is rebuilt."""

    onnx_md5: str
    images: int
    batch_size: int
    picks_md5: str
    tensorrt_version: str
    algorithm: str = ALGORITHM


def is_current(layout: RunLayout, spec: CalibrationSpec) -> bool:
    cache = calibration_cache_path(layout)
    payload = read_record(calibration_record_path(layout)) if cache.is_file() else {}
    return (
        bool(payload)
        and payload.get("spec") == asdict(spec)
        and payload.get("cache_md5") == file_md5(cache)
    )


def _calibrator(trt: Any, cuda: Any, source: Iterator[np.ndarray], size: int, cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 feeding `source` to the GPU; writes the cache atomically."""

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pointer = cuda.malloc(size * int(np.prod(INPUT_SHAPE)) * 4)
            self.stream = cuda.stream_create()
            self.fed = 0
            self.written = False

        def get_batch_size(self) -> int:
            return size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                batch = np.ascontiguousarray(next(source), dtype=np.float32)
            except StopIteration:
                return None  # tells TensorRT the calibration data is exhausted
            cuda.to_device(self.pointer, batch, self.stream)
            cuda.synchronize(self.stream)  # `batch` must outlive the copy
            self.fed += 1
            return [self.pointer]

        def read_calibration_cache(self) -> None:
            return None  # only called when the cache is stale: calibrate afresh

        def write_calibration_cache(self, data: Any) -> None:
            atomic_write_bytes(cache, bytes(data))
            self.written = True

        def release(self) -> None:
            cuda.free(self.pointer)
            cuda.stream_destroy(self.stream)
            self.pointer = self.stream = 0

    return Calibrator()


def build_calibration_cache(
    layout: RunLayout,
    images: int = DEFAULT_IMAGES,
    batch_size: int = DEFAULT_BATCH,
    device: int = 0,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Write (or keep, when current) `<run>/engines/tensorrt/int8/calibration.cache`."""
    from ..backends.cudart import CudaRuntime
    from ..backends.tensorrt_backend import import_tensorrt

    stems = {split: read_stems(layout.info_path(split)) for split in SPLITS}
    picks = usable(pick_images(stems, images), batch_size)
    onnx = require_model(layout)
    trt = import_tensorrt()
    spec = CalibrationSpec(
        onnx_md5=file_md5(onnx),
        images=len(picks),
        batch_size=batch_size,
        picks_md5=picks_md5(picks),
        tensorrt_version=str(trt.__version__),
    )
    cache = calibration_cache_path(layout)
    if not force and is_current(layout, spec):
        print(f"calibration cache is current: {cache}")
        return cache
    cuda = CudaRuntime.load()
    cuda.set_device(device)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".", 1)[0])
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated there).
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PcbError(f"TensorRT cannot parse {onnx}: {errors}; re-run `pcb export`")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    fixed = (batch_size, *INPUT_SHAPE)
    profile.set_shape(INPUT_NAME, fixed, fixed, fixed)
    config.add_optimization_profile(profile)
    config.set_calibration_profile(profile)
    total = len(picks) // batch_size
    source = iter(
        tqdm(
            batches(layout, picks, batch_size),
            total=total,
            desc="int8 calibration",
            unit="batch",
            disable=quiet,
        )
    )
    calibrator = _calibrator(trt, cuda, source, batch_size, cache)
    config.int8_calibrator = calibrator
    try:
        # Building runs the calibration; the engine itself is not needed (trtexec builds the
        # timed ones with this cache), so its bytes are dropped.
        serialized = builder.build_serialized_network(network, config)
    finally:
        calibrator.release()
    if serialized is None or not calibrator.written:
        raise PcbError(
            f"TensorRT's int8 calibration wrote no cache ({calibrator.fed} of {total} batches "
            "fed): see TensorRT's messages above; check the GPU supports int8 (compute "
            "capability 6.1 or later)"
        )
    atomic_write_json(
        calibration_record_path(layout),
        {
            "spec": asdict(spec),
            "cache_md5": file_md5(cache),
            "batches": calibrator.fed,
            "splits": sorted({split for split, _ in picks}),
            **stamp(),
        },
    )
    print(f"calibration cache: {cache} ({len(picks)} images, batch {batch_size})")
    return cache


def calibration_md5(layout: RunLayout) -> str:
    """md5 of the run's calibration cache; PcbError with the fix when there is none."""
    cache = calibration_cache_path(layout)
    if not cache.is_file():
        raise PcbError(
            f"int8 needs the calibration cache {cache}, which is missing: run "
            f"`python -m pcb trt-calibrate --run {layout.root}` first (`invoke trt --precision "
            "int8` does)"
        )
    return file_md5(cache)
