"""The guide's preprocessing: Market JPEG -> 3x384x128 float32 raw .bin, plus the .info lists."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .constants import INPUT_BYTES, INPUT_HEIGHT, INPUT_SHAPE, INPUT_WIDTH, MEAN, SPLITS, STD
from .dataset import (
    ImageRecord,
    SplitListing,
    describe,
    find_market_root,
    list_split,
    shown_name,
    shown_names,
    unusable_message,
)
from .errors import PcbError
from .fileio import atomic_write_bytes, atomic_write_text, sync_folder
from .layout import RunLayout
from .progress import progress
from .record.digest import DigestStore, bytes_digest, digest_store
from .record.digest_records import SplitDigests, bins_record_path, check_files, describe_redo
from .skipped import SkippedImage, write_skipped

# float32 like torchvision's ToTensor + Normalize, so the bins match the guide's to the bit.
_MEAN = np.asarray(MEAN, dtype=np.float32)[:, None, None]
_STD = np.asarray(STD, dtype=np.float32)[:, None, None]
_LEVELS = np.float32(255.0)
_STRAY_SHOWN = 5


# Market-1501 images are 64 x 128. 4096 x 4096 (16.7 Mpx, 50 MB as 8-bit RGB per worker)
# leaves room for any real person crop, while a file declaring 20000 x 20000 (1.2 GB once
# decoded) is refused from its header, before anything is decoded.
MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE
# PIL's own check at the same limit, so no other path decodes more: it warns above the limit
# and raises DecompressionBombError above twice it; _decoded turns both into a named error.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# 8-bit sample formats that PIL converts to RGB exactly as the guide's `convert("RGB")` does
# (1-bit bilevel too: 0 and 1 become 0 and 255). The rest (I;16*, I, F: 16- and 32-bit
# samples) would be clipped to 0..255, a 16-bit image turning white, so they are refused.
ACCEPTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
_SAMPLES = {"I": "32-bit integer", "F": "32-bit floating-point"}
# Why an image's content makes it unusable (skipped.json's `reason`; pcb.dataset has the
# reasons a name shows).
UNREADABLE = "unreadable"
CORRUPT = "corrupt"
PIXEL_FORMAT = "pixel-format"
TOO_LARGE = "too-large"


class UnusableImage(PcbError):
    """An image preprocessing cannot use, with the reason as a code for skipped.json."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _samples(mode: str) -> str:
    if mode.startswith("I;16"):
        return "16-bit integer"
    return _SAMPLES.get(mode, f"{mode}")


def _check_header(path: Path, image: Image.Image) -> None:
    """Size and sample format, as the header declares them: nothing is decoded yet."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise _too_large(path, f"is {width} x {height} pixels")
    if image.mode not in ACCEPTED_MODES:
        raise UnusableImage(
            PIXEL_FORMAT,
            f"image {path} has {_samples(image.mode)} samples (PIL mode {image.mode}); the "
            "guide's preprocessing reads 8-bit images, and converting this one would clip "
            "it (a 16-bit image turns white): save it as an 8-bit JPEG or remove it",
        )


def _too_large(path: Path, size: str) -> UnusableImage:
    return UnusableImage(
        TOO_LARGE,
        f"image {path} {size}, more than the {MAX_PIXELS:,} ({MAX_SIDE} x {MAX_SIDE}) pcb "
        "decodes (Market-1501 images are 64 x 128): scale or crop it down, or remove it",
    )


def _corrupt(path: Path, error: BaseException) -> UnusableImage:
    detail = str(error).strip() or type(error).__name__
    return UnusableImage(
        CORRUPT,
        f"image {path} cannot be decoded ({detail}): the file is corrupt or empty; "
        "re-download or re-unpack the dataset",
    )


def _decoded(path: Path) -> Image.Image:
    """The image as RGB, once its header has passed _check_header; else UnusableImage."""
    # Opened apart from PIL, so that an unreadable file is told apart from a corrupt one.
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the `with handle` below
    except OSError as error:
        raise UnusableImage(
            UNREADABLE,
            f"image {path} cannot be read ({error.strerror}): make it readable "
            "(`chmod a+r`) or remove it",
        ) from None
    with handle:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(handle)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # PIL's message: "Image size (400000000 pixels) exceeds limit of ...".
            count = re.search(r"\((\d+) pixels\)", str(error))
            declared = f"{int(count.group(1)):,} pixels" if count else "too many pixels"
            raise _too_large(path, f"declares {declared} in its header") from None
        # PIL reports damaged data as OSError (UnidentifiedImageError is one), SyntaxError,
        # ValueError, EOFError, struct.error, IndexError...: whatever it is, it is the file's.
        except Exception as error:
            raise _corrupt(path, error) from None
        with image:
            _check_header(path, image)
            try:
                return image.convert("RGB")
            except Exception as error:
                raise _corrupt(path, error) from None


def preprocess_image(path: Path) -> np.ndarray:
    """RGB -> bilinear resize to 128x384 (w x h) -> /255 -> normalise -> CHW float32.

    An image pcb cannot use (unreadable, corrupt, too large, not 8-bit) raises UnusableImage
    naming it, the reason and the fix.
    """
    rgb = _decoded(path)
    resized = rgb.resize((INPUT_WIDTH, INPUT_HEIGHT), Image.BILINEAR)
    chw = np.empty(INPUT_SHAPE, dtype=np.float32)
    # The guide's float32 operations in its order ((v / 255 - mean) / std, each rounded to
    # float32), so the same bytes; each written in place into one CHW buffer. 0.19 ms an
    # image against 0.90 ms for the per-channel lookup tables used before (np.take widens
    # every uint8 index to 64 bits) and more for the arithmetic with temporaries.
    np.divide(np.asarray(resized).transpose(2, 0, 1), _LEVELS, out=chw, dtype=np.float32)
    np.subtract(chw, _MEAN, out=chw)
    np.divide(chw, _STD, out=chw)
    return chw


# One image to convert: (JPEG, bin).
Task = tuple[Path, Path]
# A bin written: its path, the digest of its bytes, its stat right after the write.
Written = tuple[Path, str, os.stat_result]
SKIP_HINT = (
    "; or pass --skip-bad-images to leave such images out (they are listed in "
    "bins/<split>.skipped.json and named in the report)"
)


def _convert(task: Task) -> SkippedImage | Written:
    """Write one bin; an image that cannot be used is returned instead (the caller decides
    whether that skips it or stops the stage)."""
    source, target = task
    try:
        chw = preprocess_image(source)
    except UnusableImage as error:
        return SkippedImage(source.name, str(error), error.reason)
    # The array's own buffer (C-contiguous float32, native order): no 590 KB bytes copy.
    data = memoryview(chw).cast("B")
    # Not synced one by one (an fsync per bin would cost more than the bin): the split's
    # bins are synced together before its .info marks it complete.
    atomic_write_bytes(target, data, durable=False)
    # Hashed here, in the worker, from the bytes written: the bin is never read back.
    return target, bytes_digest(data), os.stat(target)


def _check_no_strays(bins_dir: Path, wanted: set[str]) -> None:
    # A bin whose image is gone means this run folder was made from another dataset; mixing the
    # two would silently change the evaluation, so refuse rather than guess.
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
    tasks: list[Task], workers: int, bar: Any, written: Callable[[Written], None]
) -> list[SkippedImage]:
    skipped: list[SkippedImage] = []
    if workers <= 1 or len(tasks) <= 1:
        results: Iterable[SkippedImage | Written] = map(_convert, tasks)
        for result in results:
            _collect(result, skipped, written)
            bar.update(1)
        return skipped
    chunksize = max(1, min(64, len(tasks) // (workers * 8)))
    # concurrent.futures, not multiprocessing.Pool: a failure (a full disk in a worker) left
    # the `with Pool` exit's terminate() waiting for ever, now and then, on its task handler
    # thread (seen 1 run in 25 on a full tmpfs; python/cpython#96995, #78178). Here an error
    # cancels what has not started and waits for the chunks already handed out.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context())
    try:
        for result in pool.map(_convert, tasks, chunksize=chunksize):
            _collect(result, skipped, written)
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return skipped


def _collect(
    result: SkippedImage | Written, skipped: list[SkippedImage], written: Callable[[Written], None]
) -> None:
    if isinstance(result, SkippedImage):
        skipped.append(result)
    else:
        written(result)


def _report_split(
    layout: RunLayout, listing: SplitListing, used: int, skipped: Sequence[SkippedImage]
) -> None:
    """One line accounting for every file of the split folder, then what was left out."""
    split = listing.split
    print(
        f"{split}: found {listing.found:,} files in {listing.folder}: used {used:,}, junk "
        f"{listing.junk:,} dropped, skipped {len(skipped):,}, ignored {len(listing.ignored):,}"
    )
    if skipped:
        shown = ", ".join(f"{shown_name(i.name)} ({i.reason})" for i in skipped[:_STRAY_SHOWN])
        more = f" and {len(skipped) - _STRAY_SHOWN} more" if len(skipped) > _STRAY_SHOWN else ""
        print(f"{split}: skipped {shown}{more}: listed in {layout.skipped_path(split)}")
    if listing.ignored:
        print(f"{split}: ignored, not images: {shown_names(listing.ignored, _STRAY_SHOWN)}")


def preprocess_split(
    layout: RunLayout,
    listing: SplitListing,
    workers: int = 0,
    quiet: bool = False,
    skip_bad_images: bool = False,
) -> tuple[int, list[SkippedImage]]:
    """Write the split's bins (skipping complete ones), then its info file; returns how
    many images it used and those it could not: named by the listing or failing by content.

    With `skip_bad_images` they get no bin, stay out of the info file and are listed in
    bins/<split>.skipped.json (pcb.skipped). Without it the split gets neither file (it is
    not complete) and the caller stops the stage, naming them; the bins written are whole
    and the rerun keeps them.
    """
    split = listing.split
    records = listing.records
    bins_dir = layout.bins_dir(split)
    bins_dir.mkdir(parents=True, exist_ok=True)
    _check_no_strays(
        bins_dir, {r.stem for r in records} | {Path(u.name).stem for u in listing.unusable}
    )
    _remove_stale_temps(bins_dir)
    store = digest_store(layout.root)
    digests = SplitDigests.load(bins_record_path(layout, split))
    pending, images, redone = _reuse_bins(bins_dir, records, digests, store)
    for line in redone:
        print(line)
    # Before any bin is rewritten: no entry may vouch for a bin about to be replaced.
    digests.write()
    tasks = [(r.path, bins_dir / f"{r.stem}.bin") for r in pending]
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
        # The info file marks a complete split: never leave an old one beside missing bins.
        info.unlink(missing_ok=True)
    processes = min(workers or os.cpu_count() or 1, max(1, len(tasks)))
    with progress(
        len(records), f"preprocess {split}", "img", quiet or not tasks, initial=done, leave=False
    ) as bar:
        failed = _run_tasks(tasks, processes, bar, written)
    # The bins written are recorded whether or not the split completes: a rerun keeps them.
    digests.write()
    store.save()
    named = [SkippedImage(u.name, u.message, u.reason) for u in listing.unusable]
    skipped = sorted([*named, *failed], key=lambda image: image.name)
    if skipped and not skip_bad_images:
        info.unlink(missing_ok=True)
        layout.skipped_path(split).unlink(missing_ok=True)
        return 0, skipped
    left_out = {image.name for image in failed}
    kept = [r for r in records if r.path.name not in left_out]
    if not kept:
        raise PcbError(
            f"no {split} image of the dataset can be used (e.g. {skipped[0].error}): "
            "re-download or re-unpack Market-1501 (see data/README.md)"
        )
    if tasks:
        # Every bin on the disk before the info file says the split is complete: a power
        # cut must not leave a complete-looking split of empty bins. One sync of the file
        # system, not one per bin (measured: README, Failure modes).
        sync_folder(bins_dir)
    # Before the info file, which marks the split complete; unchanged content is not
    # rewritten (keeps mtimes).
    write_skipped(layout, split, skipped)
    # Last, so a listed bin always exists.
    text = info_text(layout, split, kept)
    if not info.is_file() or info.read_text(encoding="utf-8") != text:
        atomic_write_text(info, text)
    _report_split(layout, listing, len(kept), skipped)
    return len(kept), skipped


def preprocess_dataset(
    dataset_root: Path,
    layout: RunLayout,
    workers: int = 0,
    quiet: bool = False,
    skip_bad_images: bool = False,
) -> dict[str, int]:
    """Every query and gallery image -> <run>/bins/<split>/<stem>.bin, then <split>.info.

    Every file of both split folders is accounted for (used, junk, skipped, ignored), and an
    image that cannot be used stops the stage naming it, or with `skip_bad_images` is left
    out and listed. What the names show is checked for both splits before any bin is written;
    what only the content shows, as each image is read, and reported once all are done.
    """
    if workers < 0:
        raise PcbError(f"workers must be 0 (all cores) or more, got {workers}")
    root = find_market_root(dataset_root)
    listings = {split: list_split(root, split) for split in SPLITS}
    named = [u for listing in listings.values() for u in listing.unusable]
    if named and not skip_bad_images:
        raise PcbError(unusable_message([u.message for u in named]) + SKIP_HINT)
    for listing in listings.values():
        if not listing.records:
            what = (
                "holds no image that can be used"
                if listing.unusable
                else "holds only junk images (person id -1)"
            )
            raise PcbError(
                f"split folder {listing.folder} {what}, nothing to evaluate: re-download or "
                "re-unpack Market-1501 (see data/README.md)"
            )
    market = {split: listing.records for split, listing in listings.items()}
    print(f"Market-1501 at {root}: {describe(market)}")
    failed: list[SkippedImage] = []
    counts = {}
    for split in SPLITS:
        counts[split], skipped = preprocess_split(
            layout,
            listings[split],
            workers=workers,
            quiet=quiet,
            skip_bad_images=skip_bad_images,
        )
        if not skip_bad_images:
            failed += skipped
    if failed:
        raise PcbError(unusable_message([image.error for image in failed]) + SKIP_HINT)
    return counts
