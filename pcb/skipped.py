"""The images `preprocess --skip-bad-images` left out: `<run>/bins/<split>.skipped.json`.

Preprocessing writes it (or removes it when nothing was skipped); inference never sees those
images, since the split's .info list leaves them out; evaluation drops them from the dataset's
records so that the dumps and the records still match one to one; the report names them.
An image left out changes the accuracy, so it is never silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .constants import SPLITS
from .errors import PcbError
from .fileio import atomic_write_json, read_json
from .layout import RunLayout

SHOWN = 5


@dataclass(frozen=True)
class SkippedImage:
    name: str  # the JPEG's file name
    error: str  # why it could not be decoded

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def write_skipped(layout: RunLayout, split: str, images: Sequence[SkippedImage]) -> None:
    """Record a split's skipped images; with none, make sure no old record is left."""
    path = layout.skipped_path(split)
    if not images:
        path.unlink(missing_ok=True)
        return
    atomic_write_json(
        path,
        {
            "split": split,
            "count": len(images),
            "images": [{"name": i.name, "error": i.error} for i in sorted(images, key=_key)],
        },
    )


def _key(image: SkippedImage) -> str:
    return image.name


def read_skipped(layout: RunLayout, split: str) -> list[SkippedImage]:
    """The split's skipped images; [] when preprocessing skipped none."""
    path = layout.skipped_path(split)
    if not path.is_file():
        return []
    try:
        payload: Any = read_json(path)
        return [SkippedImage(str(i["name"]), str(i.get("error", ""))) for i in payload["images"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PcbError(
            f"cannot read {path} ({error}): re-run `python -m pcb preprocess "
            "--skip-bad-images` for this run to write it again"
        ) from None


def skipped_stems(layout: RunLayout) -> dict[str, set[str]]:
    return {split: {image.stem for image in read_skipped(layout, split)} for split in SPLITS}


def describe_skipped(skipped: dict[str, list[str]]) -> str | None:
    """'2 images skipped as unreadable (query: a.jpg; gallery: b.jpg)'; None for none."""
    total = sum(len(names) for names in skipped.values())
    if not total:
        return None
    parts = []
    for split, names in skipped.items():
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            parts.append(f"{split}: {', '.join(names[:SHOWN])}{more}")
    noun = "image" if total == 1 else "images"
    return (
        f"{total} {noun} skipped as unreadable by `preprocess --skip-bad-images` and left out "
        f"of the evaluation ({'; '.join(parts)}): the accuracy is over the remaining images"
    )
