"""The preprocessing benchmark's reference and the pipeline give the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcb.bench.common import BenchConfig
from pcb.bench.preprocessing import bench_preprocessing, reference_preprocess
from pcb.preprocess import preprocess_image


def _image(path: Path, mode: str, size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


@pytest.mark.parametrize(
    "name, mode, size",
    [
        ("a.jpg", "RGB", (64, 128)),
        ("b.png", "RGB", (53, 141)),
        ("c.png", "L", (64, 128)),
        ("d.png", "RGBA", (128, 384)),
        ("e.jpg", "RGB", (300, 90)),
    ],
)
def test_pipeline_transform_is_byte_identical_to_the_reference(tmp_path, name, mode, size):
    path = _image(tmp_path / name, mode, size, seed=len(name) + size[0])
    assert preprocess_image(path).tobytes() == reference_preprocess(path)


def test_every_8_bit_level_maps_identically(tmp_path):
    # All 256 levels in every channel: the in-place arithmetic must match the reference.
    ramp = np.arange(128 * 384 * 3, dtype=np.int64).reshape(384, 128, 3) % 256
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp.astype(np.uint8)).save(path)
    assert preprocess_image(path).tobytes() == reference_preprocess(path)


def test_benchmark_checks_equality_and_reports_a_ratio(tmp_path):
    config = BenchConfig(quick=True, preprocess_identities=3, preprocess_repeats=1)
    result = bench_preprocessing(config, tmp_path)
    assert result.details["identical"] is True
    assert result.details["images"] > 10
    ratio = result.figures[-1]
    assert ratio.name == "pipeline / reference"
    assert ratio.value > 0 and ratio.target == ">= 1.8"
