"""The guide's preprocessing: Market JPEG -> 3x384x128 float32 raw .bin, plus the .info lists."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .constants import INPUT_BYTES, INPUT_HEIGHT, INPUT_SHAPE, INPUT_WIDTH, MEAN, SPLITS, STD
from .dataset import ImageRecord, describe, find_market_root, load_market
from .digest import DigestStore, bytes_digest, digest_store
from .digest_records import SplitDigests, bins_record_path, check_files, describe_redo
from .errors import PcbError
from .fileio import atomic_write_bytes, atomic_write_text
from .layout import RunLayout
from .skipped import SkippedImage, write_skipped

# float32 like torchvision's ToTensor + Normalize, so the bins match the guide's to the bit.
_MEAN = np.asarray(MEAN, dtype=np.float32)
_STD = np.asarray(STD, dtype=np.float32)
_STRAY_SHOWN = 5


def _channel_tables() -> np.ndarray:
    """3 x 256 float32: the normalised value of each 8-bit level, per channel.

    Each output value depends only on its channel and 8-bit input level, so the guide's
    float32 arithmetic ((v / 255 - mean) / std) is done once per level here, with the same
    operations in the same order, and an image is then a table lookup: the same bytes, several
    times faster than the arithmetic over every pixel.
    """
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((levels[:, None] - _MEAN) / _STD).T)


_TABLES = _channel_tables()


def preprocess_image(path: Path) -> np.ndarray:
    """RGB -> bilinear resize to 128x384 (w x h) -> /255 -> normalise -> CHW float32."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports corrupt data as OSError (UnidentifiedImageError is one) or SyntaxError.
        raise PcbError(
            f"image {path} cannot be decoded ({error}): the file is corrupt or empty; "
            f"re-download or re-unpack the dataset"
        ) from None
    resized = rgb.resize((INPUT_WIDTH, INPUT_HEIGHT), Image.BILINEAR)
    chw = np.empty(INPUT_SHAPE, dtype=np.float32)
    # split() hands over each channel as its own 8-bit plane: no HWC -> CHW transpose.
    for channel, band in enumerate(resized.split()):
        # uint8 indices always fall inside the 256-entry table, so no bounds check is needed:
        # "clip" skips the one "raise" makes, and `out=` skips a temporary.
        np.take(_TABLES[channel], np.asarray(band), out=chw[channel], mode="clip")
    return chw


# One image to convert: (JPEG, bin, skip it when unreadable instead of failing).
Task = tuple[Path, Path, bool]
# A bin written: its path, the digest of its bytes, its stat right after the write.
Written = tuple[Path, str, os.stat_result]
SKIP_HINT = "; or pass --skip-bad-images to leave unreadable images out (they are listed)"


def _convert(task: Task) -> SkippedImage | Written:
    """Write one bin; an unreadable image is returned when skipped, else raises."""
    source, target, skip_bad = task
    try:
        chw = preprocess_image(source)
    except PcbError as error:
        if skip_bad:
            return SkippedImage(source.name, str(error))
        raise PcbError(f"{error}{SKIP_HINT}") from None
    # The array's own buffer (C-contiguous float32, native order): no 590 KB bytes copy.
    data = memoryview(chw).cast("B")
    atomic_write_bytes(target, data)
    # Hashed here, in the worker, from the bytes written: the bin is never read back.
    return target, bytes_digest(data), os.stat(target)


def _check_no_strays(bins_dir: Path, records: Sequence[ImageRecord]) -> None:
    # A bin whose image is gone means this run folder was made from another dataset; mixing the
    # two would silently change the evaluation, so refuse rather than guess.
    wanted = {r.stem for r in records}
    strays = sorted(p.name for p in bins_dir.glob("*.bin") if p.stem not in wanted)
    if strays:
        shown = ", ".join(strays[:_STRAY_SHOWN])
        more = f" and {len(strays) - _STRAY_SHOWN} more" if len(strays) > _STRAY_SHOWN else ""
        raise PcbError(
            f"{bins_dir} holds {len(strays)} .bin files for images not in this dataset "
            f"({shown}{more}): it was preprocessed from another dataset; delete {bins_dir} "
            f"or use a new --run folder"
        )


def _remove_stale_temps(bins_dir: Path) -> None:
    # Left by a killed run: atomic_write_bytes names its temp files .<name>.<random>.tmp.
    for temp in bins_dir.glob(".*.bin.*.tmp"):
        temp.unlink(missing_ok=True)


def _reuse_bins(
    bins_dir: Path,
    records: Sequence[ImageRecord],
    digests: SplitDigests,
    store: DigestStore,
) -> tuple[list[ImageRecord], dict[str, str], list[str]]:
    """The images whose bin must be made (again), every image's digest by bin name, and
    what to tell the user about bins made again for a reason other than being missing.

    A bin is kept only when it has the digest recorded when it was written and was made
    from an image with the digest that image has now.
    """
    stats = [(r.path, os.stat(r.path)) for r in records]
    images = {f"{r.stem}.bin": d for r, d in zip(records, store.digests(stats))}
    reuse = check_files(digests, list(images), images, INPUT_BYTES, store)
    digests.keep_only(set(reuse.kept))
    todo = set(reuse.pending)
    pending = [r for r in records if f"{r.stem}.bin" in todo]
    return pending, images, describe_redo(bins_dir.name, reuse, "bin", "image")


def info_text(layout: RunLayout, split: str, records: Sequence[ImageRecord]) -> str:
    """The benchmark tool's info list: `<index> <bin path> <width> <height>` per image.

    The guide's get_info.py writes, for bins, the width and height given on its command line,
    which the guide sets to the model input (128 384); paths are relative to the run folder.
    """
    bins_dir = layout.bins_dir(split).relative_to(layout.root)
    lines = [
        f"{index} {(bins_dir / f'{r.stem}.bin').as_posix()} {INPUT_WIDTH} {INPUT_HEIGHT}\n"
        for index, r in enumerate(records)
    ]
    return "".join(lines)


def _run_tasks(
    tasks: list[Task], workers: int, bar: tqdm, written: Callable[[Written], None]
) -> list[SkippedImage]:
    skipped = []
    if workers <= 1 or len(tasks) <= 1:
        results: Iterable[SkippedImage | Written] = map(_convert, tasks)
        for result in results:
            _collect(result, skipped, written)
            bar.update(1)
        return skipped
    chunksize = max(1, min(64, len(tasks) // (workers * 8)))
    with get_context().Pool(processes=workers) as pool:
        for result in pool.imap_unordered(_convert, tasks, chunksize=chunksize):
            _collect(result, skipped, written)
            bar.update(1)
    return skipped


def _collect(
    result: SkippedImage | Written, skipped: list[SkippedImage], written: Callable[[Written], None]
) -> None:
    if isinstance(result, SkippedImage):
        skipped.append(result)
    else:
        written(result)


def preprocess_split(
    layout: RunLayout,
    split: str,
    records: Sequence[ImageRecord],
    workers: int = 0,
    quiet: bool = False,
    skip_bad_images: bool = False,
) -> int:
    """Write the split's bins (skipping complete ones) then its info file; returns the count.

    With `skip_bad_images`, images that cannot be decoded get no bin, stay out of the info
    file and are listed in bins/<split>.skipped.json (pcb.skipped); the count excludes them.
    """
    bins_dir = layout.bins_dir(split)
    bins_dir.mkdir(parents=True, exist_ok=True)
    _check_no_strays(bins_dir, records)
    _remove_stale_temps(bins_dir)
    store = digest_store(layout.root)
    digests = SplitDigests.load(bins_record_path(layout, split))
    pending, images, redone = _reuse_bins(bins_dir, records, digests, store)
    for line in redone:
        print(line)
    # Before any bin is rewritten: no entry may vouch for a bin about to be replaced.
    digests.write()
    tasks = [(r.path, bins_dir / f"{r.stem}.bin", skip_bad_images) for r in pending]
    done = len(records) - len(tasks)
    if done and not quiet:
        state = "nothing to do" if not tasks else f"resuming with {len(tasks):,}"
        print(f"{split}: {done:,} of {len(records):,} images already preprocessed, {state}")

    def written(result: Written) -> None:
        path, digest, stat = result
        digests.put(path.name, digest, images[path.name])
        store.remember(path, digest, stat=stat)
        if digests.flush():
            store.save()

    info = layout.info_path(split)
    if tasks:
        # The info file marks a complete split: never leave an old one beside missing bins,
        # nor an old list of skipped images that this run will decide anew.
        info.unlink(missing_ok=True)
        layout.skipped_path(split).unlink(missing_ok=True)
    processes = min(workers or os.cpu_count() or 1, max(1, len(tasks)))
    with tqdm(
        total=len(records),
        initial=done,
        desc=split,
        unit="img",
        disable=quiet or not tasks,
        leave=False,
    ) as bar:
        skipped = _run_tasks(tasks, processes, bar, written)
    digests.write()
    store.save()
    left_out = {image.stem for image in skipped}
    kept = [r for r in records if r.stem not in left_out]
    if not kept:
        raise PcbError(
            f"every {split} image of the dataset is unreadable (e.g. {skipped[0].error}): "
            "re-download or re-unpack Market-1501 (see data/README.md)"
        )
    if skipped:
        names = sorted(image.name for image in skipped)
        shown = ", ".join(names[:_STRAY_SHOWN])
        more = f" and {len(names) - _STRAY_SHOWN} more" if len(names) > _STRAY_SHOWN else ""
        noun = "image" if len(names) == 1 else "images"
        print(
            f"{split}: skipped {len(names)} unreadable {noun}: {shown}{more} "
            f"(listed in {layout.skipped_path(split)})"
        )
    # Before the info file, which marks the split complete.
    if tasks:
        write_skipped(layout, split, skipped)
    # Last, so a listed bin always exists; unchanged content is not rewritten (keeps mtimes).
    text = info_text(layout, split, kept)
    if not info.is_file() or info.read_text(encoding="utf-8") != text:
        atomic_write_text(info, text)
    return len(kept)


def preprocess_dataset(
    dataset_root: Path,
    layout: RunLayout,
    workers: int = 0,
    quiet: bool = False,
    skip_bad_images: bool = False,
) -> dict[str, int]:
    """Every query and gallery image -> <run>/bins/<split>/<stem>.bin, then <split>.info.

    `skip_bad_images`: leave out (and list) images that cannot be decoded instead of failing.
    """
    if workers < 0:
        raise PcbError(f"workers must be 0 (all cores) or more, got {workers}")
    market = load_market(dataset_root)
    print(f"Market-1501 at {find_market_root(dataset_root)}: {describe(market)}")
    return {
        split: preprocess_split(
            layout,
            split,
            market[split],
            workers=workers,
            quiet=quiet,
            skip_bad_images=skip_bad_images,
        )
        for split in SPLITS
    }
