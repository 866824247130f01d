"""Preprocessing: the pipeline's `preprocess_dataset` against a plain single-process loop.

The reference is the guide's transform written the obvious way (torchvision's ToTensor then
Normalize, in numpy float32): PIL open, RGB, bilinear resize to 128 x 384, per-pixel
arithmetic, one plain file write per image. Both run over the same images (a demo dataset
drawn larger than the default, Market-sized 64 x 128 JPEGs); every output must be identical
byte for byte.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..backends.base import resolve_threads
from ..constants import INPUT_HEIGHT, INPUT_WIDTH, MEAN, SPLITS, STD
from ..errors import PcbError
from ..layout import RunLayout
from .common import BenchConfig, BenchResult, Figure, ratio_figure

TARGET_SPEEDUP = 1.8
_MEAN = np.asarray(MEAN, dtype=np.float32)[:, None, None]
_STD = np.asarray(STD, dtype=np.float32)[:, None, None]


def reference_preprocess(path: Path) -> bytes:
    """torchvision's ToTensor + Normalize, spelled out: CHW, / 255, - mean, / std, float32."""
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((INPUT_WIDTH, INPUT_HEIGHT), Image.BILINEAR)
    chw = np.asarray(resized).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((chw - _MEAN) / _STD, dtype=np.float32).tobytes()


def reference_run(images: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in images:
        (out / f"{path.stem}.bin").write_bytes(reference_preprocess(path))


def _images(dataset_root: Path) -> list[Path]:
    from ..dataset import load_market

    market = load_market(dataset_root)
    return [r.path for split in SPLITS for r in market[split]]


def compare_outputs(reference: Path, layout: RunLayout, images: list[Path]) -> int:
    """Number of images whose pipeline bin differs from the reference's (0 expected)."""
    pipeline = {p.stem: p for split in SPLITS for p in layout.bins_dir(split).glob("*.bin")}
    differing = 0
    for path in images:
        ours = pipeline.get(path.stem)
        if ours is None or ours.read_bytes() != (reference / f"{path.stem}.bin").read_bytes():
            differing += 1
    return differing


def bench_preprocessing(config: BenchConfig, workdir: Path | None = None) -> BenchResult:
    from ..demo import write_dataset
    from ..preprocess import preprocess_dataset

    root = Path(workdir or tempfile.mkdtemp(prefix="pcb-bench-preprocess-"))
    dataset_root = write_dataset(root / "data", identities=config.preprocess_identities)
    images = _images(dataset_root)
    workers = resolve_threads(config.threads)
    reference_s: list[float] = []
    reference_synced_s: list[float] = []
    pipeline_s: list[float] = []
    reference_dir = root / "reference"
    layout = RunLayout(root / "run")
    for _ in range(config.preprocess_repeats):
        # Alternated, each into an empty folder and after a sync: each pass writes 590 KB per
        # image, and dirty pages left by the previous pass (or benchmark) would otherwise be
        # written back during, and be charged to, the next one.
        shutil.rmtree(reference_dir, ignore_errors=True)
        os.sync()
        start = time.perf_counter()
        reference_run(images, reference_dir)
        reference_s.append(time.perf_counter() - start)
        # The pipeline's time ends with its bins on the disk; the reference's does not (its
        # pages are written back after its timer): that wait, apart, for the like-for-like view.
        os.sync()
        reference_synced_s.append(time.perf_counter() - start)
        shutil.rmtree(layout.root, ignore_errors=True)
        os.sync()
        start = time.perf_counter()
        preprocess_dataset(dataset_root, layout, workers=workers, quiet=True)
        pipeline_s.append(time.perf_counter() - start)
    differing = compare_outputs(reference_dir, layout, images)
    if differing:
        raise PcbError(
            f"{differing} of {len(images)} preprocessed images differ from the reference "
            "transform: the pipeline's preprocessing changed its output; fix pcb/preprocess.py"
        )
    count = len(images)
    ref_rate = count / min(reference_s)
    pipe_rate = count / min(pipeline_s)
    result = BenchResult("preprocessing")
    result.figures = [
        Figure("reference (1 process) images/s", ref_rate, "img/s"),
        Figure(f"pipeline ({workers} workers) images/s", pipe_rate, "img/s"),
        Figure(
            "pipeline / reference, both until the bins are on the disk",
            pipe_rate / (count / min(reference_synced_s)),
            "x",
        ),
        ratio_figure(
            "pipeline / reference",
            pipe_rate / ref_rate,
            TARGET_SPEEDUP,
            note=f"{count} images, outputs byte-identical",
        ),
    ]
    result.details = {
        "images": count,
        "workers": workers,
        "reference_s": [round(s, 3) for s in reference_s],
        "reference_synced_s": [round(s, 3) for s in reference_synced_s],
        "pipeline_s": [round(s, 3) for s in pipeline_s],
        "identical": differing == 0,
    }
    if workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return result
