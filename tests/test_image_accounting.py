"""Every file of a split folder accounted for (issue 11, part 3): what preprocessing cannot
use stops it naming the file, the reason and the fix, or with --skip-bad-images is left out,
listed in bins/<split>.skipped.json and counted in the report; nothing is dropped without a
line saying so, and no broken .info is ever written.

The images are real files made with PIL (16-bit PNG and TIFF, 32-bit TIFF, CMYK JPEG,
palette PNG); the oversized one is a real JPEG whose header declares 20000 x 20000.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import assert_nothing_half_written, manifest

from pcb.cli.main import main
from pcb.demo import write_dataset
from pcb.errors import PcbError
from pcb.preprocess import (
    MAX_PIXELS,
    PIXEL_FORMAT,
    TOO_LARGE,
    UNREADABLE,
    UnusableImage,
    preprocess_image,
)

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def guide_transform(path: Path) -> np.ndarray:
    """What the guide computes, independently of pcb: PIL RGB, bilinear, float64."""
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((128, 384), Image.BILINEAR)
    return ((np.asarray(resized, dtype=np.float64) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


# ---------------------------------------------------------------- the files


def gray16_png(path: Path) -> Path:
    """A real 16-bit grayscale PNG (any name: PIL reads it by its content)."""
    ramp = (np.arange(128 * 64, dtype=np.uint32).reshape(128, 64) * 8).astype(np.uint16)
    Image.fromarray(ramp).save(path, "PNG")
    return path


def tiff(path: Path, dtype: type) -> Path:
    Image.fromarray(np.full((128, 64), 1000, dtype=dtype)).save(path, "TIFF")
    return path


def declared_jpeg(path: Path, width: int, height: int) -> Path:
    """A real 64 x 128 JPEG whose frame header (SOF0) is made to declare width x height:
    a decompression bomb in a few hundred bytes."""
    buffer = path.with_suffix(".tmp")
    Image.new("RGB", (64, 128), (10, 20, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.read_bytes())
    buffer.unlink()
    sof = data.index(b"\xff\xc0")
    # Marker, length (2), precision (1), then height and width, big-endian 16-bit.
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def jpeg(path: Path, mode: str = "RGB", colour: tuple[int, ...] = (200, 100, 50)) -> Path:
    Image.new("RGB", (64, 128), colour).convert(mode).save(path, "JPEG")
    return path


# ---------------------------------------------------------------- one image


@pytest.mark.parametrize(
    ("make", "mode", "samples"),
    [
        (gray16_png, "I;16", "16-bit integer"),
        (lambda p: tiff(p, np.uint16), "I;16", "16-bit integer"),
        (lambda p: tiff(p, np.int32), "I", "32-bit integer"),
        (lambda p: tiff(p, np.float32), "F", "32-bit floating-point"),
    ],
    ids=["png-16", "tiff-16", "tiff-32-int", "tiff-32-float"],
)
def test_images_that_are_not_8_bit_are_named_not_clipped(tmp_path, make, mode, samples):
    path = make(tmp_path / "0001_c1s1_000001_00.jpg")
    with Image.open(path) as image:
        assert image.mode == mode  # what PIL makes of it: the fact the check relies on
    with pytest.raises(UnusableImage) as error:
        preprocess_image(path)
    assert error.value.reason == PIXEL_FORMAT
    message = str(error.value)
    assert str(path) in message
    assert f"{samples} samples (PIL mode {mode})" in message
    assert "save it as an 8-bit JPEG or remove it" in message


def test_what_pil_does_with_16_bit_is_clipping(tmp_path):
    # Why the 16-bit image is refused: the guide's convert("RGB") clips it to white.
    path = gray16_png(tmp_path / "x.png")
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert (rgb[64:] == 255).all()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGBA", "CMYK", "YCbCr"])
def test_8_bit_modes_are_converted_as_the_guide_does(tmp_path, mode):
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
    image = source.convert(mode)
    # JPEG holds L, RGB, CMYK (and YCbCr as RGB); the rest as a PNG or a TIFF named .jpg.
    fmt = {"L": "JPEG", "CMYK": "JPEG", "YCbCr": "TIFF", "PA": "TIFF"}.get(mode, "PNG")
    path = tmp_path / f"0001_c1s1_000001_00_{mode}.jpg"
    image.save(path, fmt)
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    np.testing.assert_allclose(preprocess_image(path), guide_transform(path), rtol=0, atol=1e-5)


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    path = jpeg(tmp_path / "c.jpg", mode="CMYK", colour=(200, 30, 30))
    unnormalised = preprocess_image(path) * STD[:, None, None] + MEAN[:, None, None]
    red, green, blue = (unnormalised[c].mean() * 255 for c in range(3))
    assert red > 150 and green < 80 and blue < 80


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (5000, 5000), (4097, 4096)])
def test_too_many_pixels_are_refused_from_the_header(tmp_path, width, height):
    """20000 x 20000 is over twice PIL's limit (PIL raises), 5000 x 5000 and 4097 x 4096
    between once and twice (PIL only warns); all are named. The file holds 64 x 128 pixels
    of data, so reaching the decoder would report it corrupt instead: the size is checked
    first."""
    path = declared_jpeg(tmp_path / "0001_c1s1_000001_00.jpg", width, height)
    with pytest.raises(UnusableImage) as error:
        preprocess_image(path)
    assert error.value.reason == TOO_LARGE
    message = str(error.value)
    assert str(path) in message and "16,777,216" in message and "4096 x 4096" in message
    assert "scale or crop it down, or remove it" in message


def test_pil_raises_on_its_own_above_twice_the_limit(tmp_path):
    # The raw error the red team met: pcb sets PIL's limit to its own, and names it.
    path = declared_jpeg(tmp_path / "x.jpg", 20000, 20000)
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)


def test_a_real_20000_square_image_is_refused(tmp_path):
    # A real, fully decodable one (48 KB as a 1-bit PNG): refused all the same.
    path = tmp_path / "0001_c1s1_000001_00.jpg"
    Image.new("1", (20000, 20000)).save(path, "PNG")
    with pytest.raises(UnusableImage, match="declares 400,000,000 pixels in its header, more "):
        preprocess_image(path)


def test_an_image_at_the_limit_is_read(tmp_path):
    path = tmp_path / "0001_c1s1_000001_00.jpg"
    Image.new("L", (4096, 4096), 90).save(path, "JPEG")
    assert preprocess_image(path).shape == (3, 384, 128)


def test_an_unreadable_file_is_told_apart_from_a_corrupt_one(tmp_path, monkeypatch):
    path = jpeg(tmp_path / "0001_c1s1_000001_00.jpg")
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    # chmod 000 does not stop root, who runs these tests in CI: refuse the open itself.
    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(UnusableImage) as error:
        preprocess_image(path)
    assert error.value.reason == UNREADABLE
    assert "cannot be read (Permission denied)" in str(error.value)
    assert "chmod a+r" in str(error.value)


# ---------------------------------------------------------------- through the command line


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=5, identities=3)


def copy_market(dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data" / dataset.name
    shutil.copytree(dataset, root)
    return root


def _preprocess(capsys, root: Path, run: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        capsys, "preprocess", "--dataset", root, "--run", run, "--workers", "2", "--quiet", *extra
    )


def _queries(root: Path) -> list[Path]:
    return sorted((root / "query").glob("*.jpg"))


def _named_problems(root: Path, tmp_path: Path) -> dict[str, str]:
    """A dangling link and a real JPEG named with a newline: found by the listing."""
    query = root / "query"
    link = query / "0091_c1s1_000001_00.jpg"
    link.symlink_to(tmp_path / "outside-data" / "0091_c1s1_000001_00.jpg")
    newline = query / "0092_c2s1_000001_00\n.jpg"
    shutil.copy(_queries(root)[0], newline)
    return {link.name: "dangling-link", newline.name: "bad-name"}


def _content_problems(root: Path) -> dict[str, str]:
    """A 16-bit PNG named .jpg and a 20000 x 20000 JPEG: found when they are read."""
    gallery = root / "bounding_box_test"
    wide = gray16_png(gallery / "0093_c3s1_000001_00.jpg")
    bomb = declared_jpeg(gallery / "0094_c4s1_000001_00.jpg", 20000, 20000)
    return {wide.name: "pixel-format", bomb.name: "too-large"}


def _usable_oddities(root: Path) -> list[str]:
    """Images that are fine, if unusual: read, not refused; and files that are no images."""
    query = root / "query"
    jpeg(query / "0095_c5s1_000001_00.jpg", mode="CMYK")
    Image.new("RGB", (64, 128), (9, 99, 199)).convert("P").save(
        query / "0096_c6s1_000001_00.jpg", "PNG"
    )
    shutil.copy(_queries(root)[0], query / "0097_c1s1_000001_00.JPG")
    (query / "Thumbs.db").write_bytes(b"\0" * 64)
    (query / "readme.txt").write_text("not an image\n")
    return ["0095_c5s1_000001_00", "0096_c6s1_000001_00", "0097_c1s1_000001_00"]


def test_names_the_listing_refuses_stop_it_before_anything_is_written(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_market(dataset, tmp_path)
    problems = _named_problems(root, tmp_path)
    run = tmp_path / "run"
    code, out, err = _preprocess(capsys, root.parent, run)
    assert code == 1
    assert "2 images cannot be used" in err
    assert "is a symbolic link to" in err and str(tmp_path / "outside-data") in err
    assert "0092_c2s1_000001_00\\n.jpg" in err and "a newline in its name" in err
    assert "--skip-bad-images" in err
    # Found from the names alone: the new run folder is not even left behind.
    assert not run.exists()
    assert all(name.split("\n")[0] in err for name in problems)

    # Into an existing run: nothing but the manifest's record of the failure.
    run.mkdir()
    code, _, err = _preprocess(capsys, root.parent, run)
    assert code == 1
    assert not (run / "bins").exists()
    assert manifest(run)["stages"]["preprocess"]["status"] == "failed"


def test_content_problems_are_all_named_after_the_others_are_done(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_market(dataset, tmp_path)
    problems = _content_problems(root)
    run = tmp_path / "run"
    code, _, err = _preprocess(capsys, root.parent, run)
    assert code == 1
    assert "2 images cannot be used" in err
    assert "16-bit integer samples (PIL mode I;16)" in err
    assert "declares 400,000,000 pixels in its header, more than the 16,777,216" in err
    for name in problems:
        assert name in err
    assert "Traceback" not in err and "decompression bomb" not in err
    # The split holding them is not marked complete; every bin written is whole.
    assert not (run / "bins" / "gallery.info").exists()
    assert (run / "bins" / "query.info").exists()
    assert_nothing_half_written(run)
    entry = manifest(run)["stages"]["preprocess"]
    assert entry["status"] == "failed" and "0094_c4s1_000001_00.jpg" in entry["error"]


def test_skip_bad_images_accounts_for_every_file_through_to_the_report(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    from tiny_model import make_tiny_model

    root = copy_market(dataset, tmp_path)
    named = _named_problems(root, tmp_path)
    content = _content_problems(root)
    used_oddities = _usable_oddities(root)
    query_files = len(list((root / "query").iterdir()))
    gallery_files = list((root / "bounding_box_test").iterdir())
    gallery_junk = sum(1 for p in gallery_files if p.name.startswith("-1_"))
    run = tmp_path / "run"

    code, out, err = _preprocess(capsys, root.parent, run, "--skip-bad-images")
    assert code == 0, err
    # One line per split: every file found is used, junk, skipped or ignored.
    query_used = query_files - 2 - 2
    assert (
        f"query: found {query_files} files in {root / 'query'}: used {query_used}, junk 0 "
        "dropped, skipped 2, ignored 2"
    ) in out
    assert "query: ignored, not images: Thumbs.db, readme.txt" in out
    gallery_used = len(gallery_files) - gallery_junk - 2
    assert (
        f"gallery: found {len(gallery_files)} files in {root / 'bounding_box_test'}: used "
        f"{gallery_used}, junk {gallery_junk} dropped, skipped 2, ignored 0"
    ) in out
    assert "(too-large)" in out and "(pixel-format)" in out

    # Each skipped image listed with its reason and the message naming the fix.
    for split, expected in (("query", named), ("gallery", content)):
        listed = json.loads((run / "bins" / f"{split}.skipped.json").read_text())
        assert listed["count"] == 2
        assert {i["name"]: i["reason"] for i in listed["images"]} == expected
        assert all(i["name"] in i["error"] or "\\n" in i["error"] for i in listed["images"])

    # The .info lists: one well-formed line per image used, the odd-but-fine ones included.
    for split, used in (("query", query_used), ("gallery", gallery_used)):
        lines = (run / "bins" / f"{split}.info").read_text().split("\n")
        assert lines[-1] == "" and len(lines) - 1 == used
        for index, line in enumerate(lines[:-1]):
            number, path, width, height = line.split(" ")
            assert (number, width, height) == (str(index), "128", "384")
            assert (run / path).stat().st_size == 589_824
    info = (run / "bins" / "query.info").read_text()
    for stem in used_oddities:
        assert f"bins/query/{stem}.bin" in info
    assert "0092_c2s1_000001_00" not in info and "0091_c1s1_000001_00" not in info

    # Inference, evaluation and the report see exactly the images used, and count the rest.
    make_tiny_model(run / "model" / "pcb.onnx")
    assert run_cli(capsys, "infer", "--run", run, "--quiet")[0] == 0
    code, out, err = run_cli(capsys, "evaluate", "--dataset", root.parent, "--run", run)
    assert code == 0, err
    record = json.loads((run / "eval" / "onnxruntime.json").read_text())
    assert (record["num_query"], record["num_gallery"]) == (query_used, gallery_used)
    assert sorted(record["skipped_images"]["query"]) == sorted(named)
    assert "4 images skipped as unusable" in out
    assert run_cli(capsys, "report", "--run", run, "--no-plots")[0] == 0
    report = json.loads((run / "report.json").read_text())
    assert sum(len(v) for v in report["runs"][0]["skipped_images"].values()) == 4
    markdown = (run / "report.md").read_text()
    assert "4 images skipped as unusable" in markdown and "query: 2, " in markdown
    assert "'0092_c2s1_000001_00\\n.jpg'" in markdown  # escaped: the table stays whole

    # A second run changes nothing: the same list is not rewritten, the stage is skipped.
    before = (run / "bins" / "query.skipped.json").stat().st_mtime_ns
    code, out, _ = _preprocess(capsys, root.parent, run, "--skip-bad-images")
    assert code == 0 and "preprocess: skipped" in out
    assert (run / "bins" / "query.skipped.json").stat().st_mtime_ns == before


def test_evaluation_refuses_an_unusable_image_preprocessing_did_not_list(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pcb.dataset import load_split

    root = copy_market(dataset, tmp_path)
    (root / "query" / "0099_c1s1_000001_00.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(PcbError, match="symbolic link"):
        load_split(root, "query")
    assert load_split(root, "query", allowed={"0099_c1s1_000001_00.jpg"})


def test_a_name_that_is_not_utf8_is_named_not_a_crash(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pcb.dataset import load_split
    from pcb.layout import RunLayout
    from pcb.skipped import read_skipped

    root = copy_market(dataset, tmp_path)
    raw = os.fsencode(root / "query") + b"/0098_c1s1_000001_00\xff.jpg"
    shutil.copy(_queries(root)[0], raw)
    name = os.fsdecode(raw).rsplit("/", 1)[1]
    run = tmp_path / "run"
    code, _, err = _preprocess(capsys, root.parent, run)
    assert code == 1 and "bytes that are not UTF-8 in its name" in err
    assert ascii(name) in err
    code, out, err = _preprocess(capsys, root.parent, run, "--skip-bad-images")
    assert code == 0, err
    (listed,) = read_skipped(RunLayout(run), "query")
    assert (listed.name, listed.reason) == (name, "bad-name")
    # Read back from skipped.json, the name is the one the listing finds: evaluation allows it.
    assert load_split(root, "query", allowed={listed.name})
