"""The images `preprocess --skip-bad-images` left out: `<run>/bins/<split>.skipped.json`.

Every image of a split folder that preprocessing could not use is here with its reason
(a dangling link, a name the .info list cannot hold, not a JPEG, not 8-bit, too large,
corrupt...) and the message naming the fix. Preprocessing writes it (or removes it when
nothing was skipped); inference never sees those images, since the split's .info list leaves
them out; evaluation leaves them out of the dataset's records so that the dumps and the
records still match one to one; the report counts and names them. An image left out changes
the accuracy, so it is never silent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PcbError
from .fileio import atomic_write_text, read_json
from .layout import RunLayout

SHOWN = 5


@dataclass(frozen=True)
class SkippedImage:
    name: str  # the image's file name
    error: str  # why it cannot be used, and the fix
    reason: str = ""  # a short code: pcb.dataset's and pcb.preprocess's constants

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def write_skipped(layout: RunLayout, split: str, images: Sequence[SkippedImage]) -> None:
    """Record a split's skipped images; with none, make sure no old record is left.

    The same list is not written again: the bins folder's fingerprint (the manifest) counts
    every file's mtime, and a needless rewrite would make inference run again.
    """
    path = layout.skipped_path(split)
    if not images:
        path.unlink(missing_ok=True)
        return
    payload = {
        "split": split,
        "count": len(images),
        "images": [
            {"name": i.name, "reason": i.reason, "error": i.error} for i in sorted(images, key=_key)
        ],
    }
    # json's default ensure_ascii escapes a name that is not UTF-8 or holds a newline.
    text = json.dumps(payload, indent=2) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass  # absent or unreadable: written anew
    atomic_write_text(path, text)


def _key(image: SkippedImage) -> str:
    return image.name


def read_skipped(layout: RunLayout, split: str) -> list[SkippedImage]:
    """The split's skipped images; [] when preprocessing skipped none."""
    path = layout.skipped_path(split)
    if not path.is_file():
        return []
    try:
        payload: Any = read_json(path)
        return [
            SkippedImage(str(i["name"]), str(i.get("error", "")), str(i.get("reason", "")))
            for i in payload["images"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PcbError(
            f"cannot read {path} ({error}): re-run `python -m pcb preprocess "
            "--skip-bad-images` for this run to write it again"
        ) from None


def describe_skipped(skipped: dict[str, list[str]]) -> str | None:
    """'2 images skipped as unusable ... (query: a.jpg; gallery: b.jpg)'; None for none."""
    total = sum(len(names) for names in skipped.values())
    if not total:
        return None
    parts = []
    for split, names in skipped.items():
        if names:
            shown = ", ".join(ascii(n) if not n.isprintable() else n for n in names[:SHOWN])
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            parts.append(f"{split}: {len(names)}, {shown}{more}")
    noun = "image" if total == 1 else "images"
    return (
        f"{total} {noun} skipped as unusable by `preprocess --skip-bad-images` and left out "
        f"of the evaluation ({'; '.join(parts)}; the reasons are in "
        "bins/<split>.skipped.json): the accuracy is over the remaining images"
    )
