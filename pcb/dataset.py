"""Market-1501 reading: find the dataset folder, list a split, parse person and camera ids."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from .constants import SPLIT_FOLDERS, SPLITS
from .errors import PcbError
from .layout import find_market_root

NAME_PATTERN = "PPPP_cCsS_FFFFFF_BB.jpg"
# facts.md section 3; anchored at the start so a stray prefix is reported, not half-parsed.
_NAME_RE = re.compile(r"([-\d]+)_c(\d)")
JUNK_PID = -1
DISTRACTOR_PID = 0
NUM_CAMERAS = 6



@dataclass(frozen=True)
class ImageRecord:
    path: Path
    stem: str
    pid: int
    camid: int  # as in the file name, 1..6


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


# Read as JPEG, whatever the case of the extension: the upstream readers glob '*.jpg', so on
# a case-sensitive file system they silently leave out a '.JPG' or '.jpeg' copy of an image.
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
# Images in another format: Market-1501 has none, so one is named, never silently ignored.
OTHER_IMAGE_SUFFIXES = frozenset({
    ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
    ".jp2", ".j2k", ".jpe", ".jfif", ".heic", ".heif", ".avif",
})  # fmt: skip
# Why a file that looks like one of the split's images cannot be used (skipped.json's
# `reason`); pcb.preprocess adds the ones only its content shows.
BAD_NAME = "bad-name"
NOT_MARKET_NAME = "not-market-name"
NOT_JPEG = "not-jpeg"
DANGLING_LINK = "dangling-link"
NOT_A_FILE = "not-a-file"
DUPLICATE = "duplicate-name"
SHOWN = 5
_CHARACTER_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", " ": "a space"}


@dataclass(frozen=True)
class Unusable:
    """A file of a split that is an image by its name, but one pcb cannot use."""

    path: Path
    reason: str  # one of the constants above, or pcb.preprocess's
    message: str  # the whole sentence: which file, what is wrong, the fix

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class SplitListing:
    """Everything found in one split folder, each entry counted exactly once:
    found = len(records) + junk + len(unusable) + len(ignored)."""

    split: str
    folder: Path
    found: int
    records: list[ImageRecord]  # usable, sorted by file name, junk dropped
    junk: int  # person id -1: dropped, as the protocol says
    unusable: list[Unusable]
    ignored: list[str]  # not images at all (Thumbs.db, readme.txt, hidden files, folders)


def shown_name(name: str) -> str:
    """A file name safe to print on one line: quoted with escapes when it holds control
    characters, spaces or bytes that are not UTF-8."""
    if _bad_character(name) is None:
        return name
    return ascii(name)


def shown_names(names: Sequence[str], limit: int = SHOWN) -> str:
    listed = ", ".join(shown_name(n) for n in names[:limit])
    return listed + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _bad_character(name: str) -> str | None:
    """What in a name would break the one-line, space-separated .info list; None if nothing."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "bytes that are not UTF-8"
    for character in name:
        if character in _CHARACTER_NAMES:
            return _CHARACTER_NAMES[character]
        # Cc: control characters; Cf: invisible format characters (a right-to-left override
        # makes a name display as another); Z*: spaces and line separators.
        if unicodedata.category(character) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            return f"the character U+{ord(character):04X}"
    return None


def _unusable_name(path: Path) -> Unusable | None:
    problem = _bad_character(path.name)
    if problem is None:
        return None
    message = (
        f"image {path.parent}/{shown_name(path.name)} has {problem} in its name, which the "
        f".info lists (one image per line, fields separated by spaces) cannot hold: rename it "
        f"to its Market-1501 name ({NAME_PATTERN}) or remove it"
    )
    return Unusable(path, BAD_NAME, message)


def _unusable_entry(entry: os.DirEntry, path: Path) -> Unusable | None:
    """A dangling link or something that is not a plain file, else None."""
    if entry.is_file():  # follows a link to its target
        return None
    if entry.is_symlink():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return Unusable(
            path,
            DANGLING_LINK,
            f"image {path} is a symbolic link to {target}, which does not exist here (a "
            "stage container sees only data/ and results/, so a link pointing outside data/ "
            "dangles there): replace the link with the file itself (`cp --remove-destination "
            '"$(readlink -f LINK)" LINK` on the host) or move its target under data/',
        )
    return Unusable(
        path,
        NOT_A_FILE,
        f"image {path} is not a regular file (a pipe, socket or device): replace it with the "
        "JPEG or remove it",
    )


def list_split(root: Path, split: str) -> SplitListing:
    """Every entry of one split folder, sorted into used, junk, unusable and ignored.

    Only the names and file types are read (one directory scan): what the images hold is
    pcb.preprocess's to check. Raises only when the folder is missing or holds no image.
    """
    if split not in SPLIT_FOLDERS:
        raise PcbError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    folder = find_market_root(root) / SPLIT_FOLDERS[split]
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    records: list[ImageRecord] = []
    unusable: list[Unusable] = []
    ignored: list[str] = []
    junk = 0
    for entry in entries:
        path = folder / entry.name
        suffix = path.suffix.lower()
        # Hidden files (.DS_Store, macOS's ._<name>.jpg) are no images: upstream's glob skips
        # them too. A folder is never an image, whatever its name.
        if entry.name.startswith(".") or entry.is_dir():
            ignored.append(entry.name + ("/" if entry.is_dir() else ""))
            continue
        if suffix in OTHER_IMAGE_SUFFIXES:
            unusable.append(
                Unusable(
                    path,
                    NOT_JPEG,
                    f"image {folder}/{shown_name(entry.name)} is a {suffix} file, not one "
                    "of Market-1501's .jpg images: give it its Market-1501 name ending in "
                    ".jpg (converting it to JPEG first if it is not one) or remove it",
                )
            )
            continue
        if suffix not in JPEG_SUFFIXES:
            ignored.append(entry.name)
            continue
        problem = _unusable_name(path)
        if problem is None:
            try:
                pid, camid = parse_name(path)
            except PcbError as error:
                problem = Unusable(path, NOT_MARKET_NAME, str(error))
        if problem is not None:
            unusable.append(problem)
            continue
        if pid == JUNK_PID:
            junk += 1  # never read, so whatever it is does not matter
            continue
        problem = _unusable_entry(entry, path)
        if problem is not None:
            unusable.append(problem)
            continue
        records.append(ImageRecord(path=path, stem=path.stem, pid=pid, camid=camid))
    records, duplicates = _split_duplicates(records)
    unusable += duplicates
    unusable.sort(key=lambda u: u.name)
    if not records and not junk and not unusable:
        raise PcbError(
            f"split folder {folder} holds no .jpg images: re-download or re-unpack Market-1501 "
            f"(see data/README.md)"
        )
    return SplitListing(split, folder, len(entries), records, junk, unusable, ignored)


def _split_duplicates(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[Unusable]]:
    # 'x.jpg' and 'x.JPG' (or 'x.jpeg') would both be written to bins/<split>/x.bin.
    by_stem: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_stem.setdefault(record.stem, []).append(record)
    kept = [r for r in records if len(by_stem[r.stem]) == 1]
    duplicates = [
        Unusable(
            r.path,
            DUPLICATE,
            f"image {r.path} shares its name without the extension with "
            f"{', '.join(o.path.name for o in by_stem[r.stem] if o is not r)}: both would be "
            f"preprocessed to {r.stem}.bin; keep one of them and remove the others",
        )
        for r in records
        if len(by_stem[r.stem]) > 1
    ]
    return kept, duplicates


def unusable_message(messages: Sequence[str]) -> str:
    """One error for one or more unusable images, each message naming its file and fix."""
    if len(messages) == 1:
        return messages[0]
    shown = ";\n  ".join(messages[:SHOWN])
    more = f";\n  and {len(messages) - SHOWN} more" if len(messages) > SHOWN else ""
    return f"{len(messages)} images cannot be used:\n  {shown}{more}"


def load_split(root: Path, split: str, allowed: Collection[str] = ()) -> list[ImageRecord]:
    """The usable images of one split sorted by file name, junk (pid -1) dropped,
    distractors kept; an unusable image raises, unless its file name is in `allowed`
    (images preprocessing already left out and listed)."""
    listing = list_split(root, split)
    refused = [u for u in listing.unusable if u.name not in allowed]
    if refused:
        raise PcbError(unusable_message([u.message for u in refused]))
    if not listing.records and not listing.unusable:
        raise PcbError(
            f"split folder {listing.folder} holds only junk images (person id -1), nothing to "
            f"evaluate: re-download or re-unpack Market-1501 (see data/README.md)"
        )
    return listing.records


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
