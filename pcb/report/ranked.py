"""The ranked-results picture: per backend, each chosen query beside its top-10 gallery images,
true matches framed green and false ones red (as torchreid's visualize_ranked_results), drawn
with Pillow from what the evaluation kept (pcb/ranked_samples.py) and the dataset's images.

One PNG per evaluated backend of a run, `ranked_<backend>.png` in the run folder. It needs the
dataset where the evaluation read it (or the same path on the host the report runs on); where
the images are not there the picture is left out with a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..constants import SPLIT_FOLDERS
from ..fileio import atomic_write_bytes

CELL_W, CELL_H = 64, 128  # half the network's 128 x 256 input aspect, enough to recognise
FRAME = 4
GAP = 6  # between the query and its ranking, and between rows
LABEL_H = 14
GREEN, RED, GREY, WHITE = (0, 170, 0), (220, 0, 0), (90, 90, 90), (255, 255, 255)


def picture_name(backend: str) -> str:
    return f"ranked_{backend}.png"


def _cell(path: Path, colour: tuple[int, int, int]) -> Any:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        inner = image.convert("RGB").resize((CELL_W - 2 * FRAME, CELL_H - 2 * FRAME))
    return ImageOps.expand(inner, border=FRAME, fill=colour)


def draw(samples: Sequence[Mapping[str, Any]], dataset_root: Path) -> bytes | None:
    """The PNG's bytes, or None when an image it needs is not at `dataset_root`."""
    import io

    from PIL import Image, ImageDraw

    query_dir = dataset_root / SPLIT_FOLDERS["query"]
    gallery_dir = dataset_root / SPLIT_FOLDERS["gallery"]
    needed = [query_dir / s["query"] for s in samples]
    needed += [gallery_dir / t["gallery"] for s in samples for t in s["top"]]
    if not samples or not all(path.is_file() for path in needed):
        return None
    columns = 1 + max(len(s["top"]) for s in samples)
    width = columns * CELL_W + GAP
    row_h = LABEL_H + CELL_H + GAP
    sheet = Image.new("RGB", (width, len(samples) * row_h), WHITE)
    pen = ImageDraw.Draw(sheet)
    for row, sample in enumerate(samples):
        y = row * row_h
        pen.text((2, y + 1), f"{sample['why']}, AP {100 * sample['ap']:.1f}%", fill=GREY)
        sheet.paste(_cell(query_dir / sample["query"], GREY), (0, y + LABEL_H))
        for column, hit in enumerate(sample["top"], start=1):
            colour = GREEN if hit["match"] else RED
            sheet.paste(
                _cell(gallery_dir / hit["gallery"], colour),
                (GAP + column * CELL_W, y + LABEL_H),
            )
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_ranked(evaluations: Sequence[Mapping[str, Any]], out: Path) -> tuple[list[Path], list]:
    """(pictures written, notes) for the evaluation records that kept ranked samples."""
    from ..provenance import host_path

    written, notes = [], []
    for record in evaluations:
        samples = record.get("ranked_samples")
        backend = str(record.get("backend", "?"))
        path = out / picture_name(backend)
        if not samples:
            path.unlink(missing_ok=True)
            continue
        root = Path(str(record.get("dataset_root", "")))
        png = draw(samples, root)
        if png is None:
            path.unlink(missing_ok=True)
            notes.append(
                f"ranked results of {backend} not drawn: the dataset's images are not at "
                f"{host_path(root)} here"
            )
            continue
        atomic_write_bytes(path, png)
        written.append(path)
    return written, notes
