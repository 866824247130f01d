from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcb.errors import PcbError
from pcb.layout import RunLayout
from pcb.preprocess import preprocess_dataset, preprocess_image

BIN_BYTES = 589_824  # 3 * 384 * 128 float32, written out rather than taken from constants
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def random_image(path: Path, seed: int = 0, size=(64, 128), fmt: str | None = None) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt or ("JPEG" if path.suffix == ".jpg" else None))
    return pixels


def expected_transform(path: Path) -> np.ndarray:
    # Independent of pcb: PIL's resize, then the normalisation in float64.
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((128, 384), Image.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float64) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


def test_matches_the_guide_transform(tmp_path):
    path = tmp_path / "0001_c1s1_001051_00.jpg"
    random_image(path)
    array = preprocess_image(path)
    assert array.shape == (3, 384, 128)
    assert array.dtype == np.float32
    assert array.flags.c_contiguous
    np.testing.assert_allclose(array, expected_transform(path), rtol=0, atol=1e-5)


def test_uniform_colour_gives_known_values_in_rgb_order(tmp_path):
    path = tmp_path / "flat.png"  # lossless, so the pixel values are exact
    Image.new("RGB", (64, 128), (255, 128, 0)).save(path)
    array = preprocess_image(path)
    expected = (np.array([255, 128, 0]) / 255.0 - MEAN) / STD
    for channel in range(3):
        np.testing.assert_allclose(array[channel], expected[channel], rtol=0, atol=1e-6)


def test_resize_is_bilinear_not_nearest(tmp_path):
    # A 2-pixel-wide image: nearest would give two flat halves, bilinear a ramp between them.
    path = tmp_path / "edge.png"
    pixels = np.zeros((4, 2, 3), dtype=np.uint8)
    pixels[:, 1] = 255
    Image.fromarray(pixels).save(path)
    row = preprocess_image(path)[0, 0] * 0.229 + 0.485
    assert len(np.unique(np.round(row, 4))) > 10
    np.testing.assert_allclose(row, expected_transform(path)[0, 0] * 0.229 + 0.485, atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_modes_are_converted_not_refused(tmp_path, mode):
    path = tmp_path / f"image_{mode}.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
    Image.new("RGB", (64, 128), (200, 100, 50)).convert(mode).save(path)
    array = preprocess_image(path)
    assert array.shape == (3, 384, 128)
    np.testing.assert_allclose(array, expected_transform(path), rtol=0, atol=1e-5)
    if mode == "L":
        unnormalised = array * STD[:, None, None] + MEAN[:, None, None]
        np.testing.assert_allclose(unnormalised[0], unnormalised[2], atol=1e-5)


def test_bytes_are_raw_float32_chw(tmp_path):
    path = tmp_path / "0001_c1s1_001051_00.jpg"
    random_image(path, seed=3)
    array = preprocess_image(path)
    data = array.tobytes()
    assert len(data) == BIN_BYTES
    out = tmp_path / "x.bin"
    out.write_bytes(data)
    np.testing.assert_array_equal(np.fromfile(out, dtype=np.float32).reshape(3, 384, 128), array)


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated"])
def test_corrupt_images_name_the_file(tmp_path, kind):
    path = tmp_path / "0001_c1s1_001051_00.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"this is not a jpeg" * 10)
    else:
        random_image(tmp_path / "whole.jpg")
        data = (tmp_path / "whole.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PcbError) as error:
        preprocess_image(path)
    assert str(path) in str(error.value)
    assert "corrupt" in str(error.value)


QUERY = ["0001_c1s1_001051_00.jpg", "0002_c3s1_000100_00.jpg", "0001_c2s1_000200_00.jpg"]
GALLERY = [
    "0001_c1s1_001101_00.jpg",
    "0002_c5s1_000300_00.jpg",
    "0000_c6s1_000500_00.jpg",
    "-1_c1s1_000000_00.jpg",
]


def make_market(base: Path) -> Path:
    root = base / "Market-1501-v15.09.15"
    sizes = [(64, 128), (48, 100), (70, 150)]
    for index, name in enumerate(QUERY):
        random_image(root / "query" / name, seed=index, size=sizes[index % 3])
    for index, name in enumerate(GALLERY):
        random_image(root / "bounding_box_test" / name, seed=10 + index)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_preprocess_dataset_writes_bins_and_info(tmp_path, capsys, workers):
    dataset = make_market(tmp_path / "data")
    layout = RunLayout(tmp_path / "run")
    counts = preprocess_dataset(tmp_path / "data", layout, workers=workers, quiet=True)
    assert counts == {"query": 3, "gallery": 3}
    assert "3 query / 3 gallery over 3 ids" in capsys.readouterr().out

    for split, folder, names in [
        ("query", "query", QUERY),
        ("gallery", "bounding_box_test", GALLERY),
    ]:
        stems = sorted(Path(n).stem for n in names if not n.startswith("-1"))
        bins = sorted(layout.bins_dir(split).iterdir())
        assert [b.name for b in bins] == [f"{s}.bin" for s in stems]
        for stem in stems:
            data = np.fromfile(layout.bins_dir(split) / f"{stem}.bin", dtype=np.float32)
            assert data.nbytes == BIN_BYTES
            expected = preprocess_image(dataset / folder / f"{stem}.jpg")
            np.testing.assert_array_equal(data.reshape(3, 384, 128), expected)
        lines = layout.info_path(split).read_text().splitlines()
        assert lines == [f"{i} bins/{split}/{s}.bin 128 384" for i, s in enumerate(stems)]
        for line in lines:
            assert (layout.root / line.split()[1]).stat().st_size == BIN_BYTES


def test_resume_skips_complete_bins_and_redoes_truncated(tmp_path):
    make_market(tmp_path / "data")
    layout = RunLayout(tmp_path / "run")
    preprocess_dataset(tmp_path / "data", layout, workers=1, quiet=True)
    bins = sorted(layout.bins_dir("query").glob("*.bin"))
    truncated = bins[1]
    good = truncated.read_bytes()
    truncated.write_bytes(good[:1000])
    stale_temp = layout.bins_dir("query") / f".{bins[0].name}.abc123.tmp"
    stale_temp.write_bytes(b"half")
    # Back-date so any rewrite would show as a changed mtime.
    for path in [*bins, layout.info_path("query")]:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = {p: p.stat().st_mtime_ns for p in bins}

    preprocess_dataset(tmp_path / "data", layout, workers=1, quiet=True)

    for path in bins:
        if path == truncated:
            assert path.stat().st_mtime_ns != before[path]
        else:
            assert path.stat().st_mtime_ns == before[path]
    assert truncated.read_bytes() == good
    assert not stale_temp.exists()
    assert layout.info_path("query").is_file()

    # With nothing left to do, nothing is written, the info file included.
    for path in [*bins, layout.info_path("query")]:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    preprocess_dataset(tmp_path / "data", layout, workers=1, quiet=True)
    for path in [*bins, layout.info_path("query")]:
        assert path.stat().st_mtime_ns == 1_000_000_000


def test_bins_from_another_dataset_are_refused(tmp_path):
    make_market(tmp_path / "data")
    layout = RunLayout(tmp_path / "run")
    stray = layout.bins_dir("gallery") / "0999_c1s1_000001_00.bin"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"\0" * BIN_BYTES)
    with pytest.raises(PcbError) as error:
        preprocess_dataset(tmp_path / "data", layout, workers=1, quiet=True)
    message = str(error.value)
    assert "0999_c1s1_000001_00.bin" in message
    assert str(layout.bins_dir("gallery")) in message
    assert "new --run" in message


def test_corrupt_image_in_dataset_fails_through_the_pool(tmp_path):
    root = make_market(tmp_path / "data")
    layout = RunLayout(tmp_path / "run")
    preprocess_dataset(tmp_path / "data", layout, workers=1, quiet=True)
    # The image changed since: its bin is redone, and fails.
    (root / "query" / QUERY[1]).write_bytes(b"")
    (layout.bins_dir("query") / QUERY[1].replace(".jpg", ".bin")).unlink()
    with pytest.raises(PcbError) as error:
        preprocess_dataset(tmp_path / "data", layout, workers=2, quiet=True)
    assert QUERY[1] in str(error.value)
    # No info file is left to describe an incomplete split.
    assert not layout.info_path("query").exists()


def test_missing_dataset_writes_nothing(tmp_path):
    layout = RunLayout(tmp_path / "run")
    with pytest.raises(PcbError, match="does not exist"):
        preprocess_dataset(tmp_path / "nowhere", layout, quiet=True)
    assert not layout.root.exists()
