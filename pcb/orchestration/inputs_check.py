"""Pre-flight of `invoke full`, before an image is built or a container starts: the checkpoint
and the dataset's splits are there, no other stage holds the run folder, and the disk holds
what preprocessing will write (the input bins of full Market-1501 take about 11.4 GB). Each
refusal names what is wrong and the fix; without it a missing checkpoint showed only after
the image builds (17 s in containers), and a full disk half-way through preprocessing."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..constants import FEATURE_BYTES, INPUT_BYTES, SPLITS
from ..errors import PcbError
from .settings import Settings

# Besides the bins and one backend's features: the models (about 0.1 GB for PCB's ONNX) and
# the records, with room to spare.
MARGIN_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class DiskNeed:
    """What preprocessing and inference will write into the run folder, and what is free."""

    images: int
    bins_bytes: int  # bins still to write (those already in the run folder count as written)
    features_bytes: int
    free_bytes: int
    where: Path

    @property
    def needed(self) -> int:
        return self.bins_bytes + self.features_bytes + MARGIN_BYTES

    @property
    def fits(self) -> bool:
        return self.needed <= self.free_bytes


def gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"


def check_checkpoint(path: Path) -> None:
    if path.is_file():
        return
    what = "is a folder, not a file" if path.is_dir() else "does not exist"
    raise PcbError(
        f"checkpoint {path} {what}: put the trained PCB checkpoint there (data/README.md says "
        "where to get it) or name it with --checkpoint (pcb.checkpoint in invoke.yaml); to try "
        "the pipeline without data, run `invoke full --demo`"
    )


def count_images(dataset: Path) -> int:
    """The images preprocessing will write a bin for, over both splits (names only: one
    directory scan per split)."""
    from ..dataset import list_split

    try:
        return sum(len(list_split(dataset, split).records) for split in SPLITS)
    except PcbError as error:
        raise PcbError(
            f"{error} (--dataset, pcb.dataset in invoke.yaml; `invoke full --demo` needs none)"
        ) from None


def _existing_bytes(folder: Path) -> int:
    total = 0
    if folder.is_dir():
        for top, _, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(top, name)).st_size
    return total


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_need(run_dir: Path, images: int) -> DiskNeed:
    where = _nearest_existing(run_dir)
    written = _existing_bytes(run_dir / "bins")
    features_written = _existing_bytes(run_dir / "dumps")
    return DiskNeed(
        images=images,
        bins_bytes=max(0, images * INPUT_BYTES - written),
        features_bytes=max(0, images * FEATURE_BYTES - features_written),
        free_bytes=shutil.disk_usage(where).free,
        where=where,
    )


def check_disk(need: DiskNeed, run_dir: Path) -> None:
    if need.fits:
        return
    raise PcbError(
        f"not enough free disk space for run folder {run_dir}: preprocessing writes "
        f"{need.images} images x {INPUT_BYTES // 1024} KiB = {gb(need.images * INPUT_BYTES)} of "
        f"input bins ({gb(need.bins_bytes)} still to write), inference "
        f"{gb(need.features_bytes)} of features, about {gb(need.needed)} in all, and "
        f"{need.where} has {gb(need.free_bytes)} free. Free some space, or put the results on a "
        "larger disk (pcb.results_dir in invoke.yaml)"
    )


def check_run_free(run_dir: Path) -> None:
    """No other stage holds the run folder's lock (record/runlock.py): taken and released."""
    from ..record.runlock import RunLock

    with RunLock(run_dir, "full (pre-flight)"):
        pass


def check_inputs(settings: Settings) -> None:
    """Everything `invoke full` can check about its inputs and outputs before anything slow.
    A demo run makes its dataset and checkpoint (demo-data), so only its run folder is
    checked."""
    images = 0
    if not settings.demo:
        check_checkpoint(settings.checkpoint)
        images = count_images(settings.dataset)
    check_run_free(settings.run_dir)
    check_disk(disk_need(settings.run_dir, images), settings.run_dir)
