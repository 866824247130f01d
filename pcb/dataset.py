"""Market-1501 reading: find the dataset folder, list a split, parse person and camera ids."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .constants import SPLIT_FOLDERS, SPLITS
from .errors import PcbError

MARKET_FOLDER = "Market-1501-v15.09.15"
NAME_PATTERN = "PPPP_cCsS_FFFFFF_BB.jpg"
# facts.md section 3; anchored at the start so a stray prefix is reported, not half-parsed.
_NAME_RE = re.compile(r"([-\d]+)_c(\d)")
JUNK_PID = -1
DISTRACTOR_PID = 0
NUM_CAMERAS = 6

_LAYOUT_HINT = (
    f"expected the {MARKET_FOLDER} folder (holding query/ and bounding_box_test/) or a folder "
    f"holding exactly one such folder; see data/README.md for where to download Market-1501, "
    f"or run `invoke demo-data` for a small synthetic one"
)


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    stem: str
    pid: int
    camid: int  # as in the file name, 1..6


def _is_market_root(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in SPLIT_FOLDERS.values())


def find_market_root(root: Path) -> Path:
    """The folder directly holding query/ and bounding_box_test/: `root` itself or its one child."""
    root = Path(root)
    if not root.exists():
        raise PcbError(f"dataset folder {root} does not exist: {_LAYOUT_HINT}")
    if not root.is_dir():
        raise PcbError(
            f"dataset path {root} is a file, not a folder: unpack the archive and pass the "
            f"folder; {_LAYOUT_HINT}"
        )
    if _is_market_root(root):
        return root
    candidates = sorted(
        child for child in root.iterdir() if child.is_dir() and _is_market_root(child)
    )
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(str(c) for c in candidates)
        raise PcbError(
            f"dataset folder {root} holds several Market-1501 folders ({names}): "
            f"pass the one to use with --dataset"
        )
    # Name what is missing where the user evidently meant a Market folder.
    for folder in [root, *sorted(c for c in root.iterdir() if c.is_dir())]:
        present = [name for name in SPLIT_FOLDERS.values() if (folder / name).is_dir()]
        if present:
            missing = [folder / name for name in SPLIT_FOLDERS.values() if name not in present]
            listed = ", ".join(str(m) for m in missing)
            raise PcbError(
                f"dataset folder {folder} has {', '.join(present)}/ but lacks {listed}: "
                f"the archive may be incompletely unpacked; {_LAYOUT_HINT}"
            )
    raise PcbError(f"dataset folder {root} holds no query/ and bounding_box_test/: {_LAYOUT_HINT}")


def parse_name(path: Path) -> tuple[int, int]:
    """(pid, camid) from a Market file name such as 0001_c1s1_001051_00.jpg."""
    match = _NAME_RE.match(path.name)
    pid = camid = None
    if match:
        try:
            pid, camid = int(match.group(1)), int(match.group(2))
        except ValueError:
            pid = camid = None
    if pid is None or camid is None or pid < JUNK_PID or not 1 <= camid <= NUM_CAMERAS:
        raise PcbError(
            f"image {path} is not named like a Market-1501 image: expected {NAME_PATTERN} "
            f"(person id PPPP, -1 for junk; camera C in 1..{NUM_CAMERAS}), e.g. "
            f"0001_c1s1_001051_00.jpg; rename or remove it"
        )
    return pid, camid


def load_split(root: Path, split: str) -> list[ImageRecord]:
    """The images of one split sorted by file name, junk (pid -1) dropped, distractors kept."""
    if split not in SPLIT_FOLDERS:
        raise PcbError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    folder = find_market_root(root) / SPLIT_FOLDERS[split]
    paths = sorted(
        (p for p in folder.iterdir() if p.suffix == ".jpg" and p.is_file()), key=lambda p: p.name
    )
    if not paths:
        raise PcbError(
            f"split folder {folder} holds no .jpg images: re-download or re-unpack Market-1501 "
            f"(see data/README.md)"
        )
    records = []
    for path in paths:
        pid, camid = parse_name(path)
        if pid == JUNK_PID:
            continue
        records.append(ImageRecord(path=path, stem=path.stem, pid=pid, camid=camid))
    if not records:
        raise PcbError(
            f"split folder {folder} holds only junk images (person id -1), nothing to evaluate: "
            f"re-download or re-unpack Market-1501 (see data/README.md)"
        )
    return records


def load_market(root: Path) -> dict[str, list[ImageRecord]]:
    return {split: load_split(root, split) for split in SPLITS}


def summarize(records: Sequence[ImageRecord]) -> dict[str, int]:
    return {
        "images": len(records),
        "ids": len({r.pid for r in records}),
        "cameras": len({r.camid for r in records}),
    }


def describe(market: dict[str, list[ImageRecord]]) -> str:
    """'3,368 query / 15,913 gallery over 751 ids' (the distractor id 0 counts as one)."""
    counts = " / ".join(f"{len(market[split]):,} {split}" for split in SPLITS if split in market)
    ids = {r.pid for records in market.values() for r in records}
    return f"{counts} over {len(ids):,} ids"
