"""Content fingerprints of what stages read and write: a file, a folder, the dataset's splits.

A file's fingerprint is its size and content digest (pcb.record.digest); a folder's is its file
count, bytes and one digest over every file's (relative path, size, digest). Both come from
the run's digest cache, so fingerprinting a 19,000-file folder that did not change costs one
stat per file, and any change of content, however it was made (same size, mtime set back),
changes the fingerprint.

A folder fingerprint that is recorded also leaves its listing, every file's size and
digest, in `<run>/.pcb/trees/<digest>.json`. The manifest stays small, and `pcb verify` and
the report can still name each file that changed. A listing is only believed when it hashes
to the digest recorded in the manifest, so a damaged one names nothing rather than the wrong
files.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..constants import SPLIT_FOLDERS
from ..errors import PcbError
from ..fileio import atomic_write_text, read_json
from ..layout import find_market_root
from .digest import ALGORITHM, DigestStore, digest_lines, digest_store
from .runlock import LOCK_NAME

MANIFEST_NAME = "manifest.json"
STATE_DIR = ".pcb"  # the digest cache and folder listings: bookkeeping
TREES_DIR = Path(STATE_DIR) / "trees"
# Files and folders of the run that are bookkeeping, not any stage's output.
BOOKKEEPING = frozenset({MANIFEST_NAME, LOCK_NAME, STATE_DIR, ".md5-cache.json"})

# relative path -> (size, digest)
Listing = dict[str, tuple[int, str]]


def is_temp_name(name: str) -> bool:
    """A temporary file of pcb.fileio (`.<name>.<random>.tmp`) or a tool's `.<name>.tmp`."""
    return name.startswith(".") and name.endswith(".tmp")


def _walk(
    folder: Path, prefix: str = ""
) -> Iterator[tuple[str, Path, list[tuple[str, os.stat_result]]]]:
    """(relative prefix, folder, its files with their stat) for `folder` and every folder
    under it; temporary and bookkeeping files left out."""
    files = []
    below = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name in BOOKKEEPING or is_temp_name(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                below.append(entry.name)
            else:
                files.append((entry.name, entry.stat()))
    yield prefix, folder, files
    for name in below:
        yield from _walk(folder / name, f"{prefix}{name}/")


def tree_listing(folder: Path, store: DigestStore) -> Listing:
    """Every file under `folder` (temporary and bookkeeping files left out): size, digest."""
    listing: Listing = {}
    for prefix, directory, files in _walk(Path(folder)):
        digests = store.folder_digests(directory, files)
        for (name, stat), digest in zip(files, digests):
            listing[prefix + name] = (stat.st_size, digest)
    return listing


def listing_digest(listing: Mapping[str, tuple[int, str]]) -> str:
    return digest_lines((name, size, digest) for name, (size, digest) in listing.items())


def tree_fingerprint(
    folder: Path, run_root: Path | None = None, keep: bool = False
) -> dict[str, Any]:
    """Count, bytes and content digest of every file under `folder`; `keep` saves the
    listing in the run (for a fingerprint about to be recorded)."""
    listing = tree_listing(folder, digest_store(run_root))
    digest = listing_digest(listing)
    if keep and run_root is not None:
        save_listing(Path(run_root), digest, listing)
    return {
        "kind": "tree",
        "files": len(listing),
        "bytes": sum(size for size, _ in listing.values()),
        "digest": digest,
        "content": ALGORITHM,
    }


def file_fingerprint(path: Path, run_root: Path | None = None) -> dict[str, Any]:
    stat = os.stat(path)
    return {
        "kind": "file",
        "bytes": stat.st_size,
        "digest": digest_store(run_root).digest(Path(path), stat),
        "content": ALGORITHM,
    }


def fingerprint(path: Path, run_root: Path | None = None, keep: bool = False) -> dict[str, Any]:
    """A file, a folder (tree) or a missing path; never raises for a path that is absent."""
    path = Path(path)
    try:
        if path.is_dir():
            return tree_fingerprint(path, run_root, keep)
        if path.is_file():
            return file_fingerprint(path, run_root)
    except OSError as error:
        return {"kind": "unreadable", "error": str(error)}
    return {"kind": "missing"}


def same_fingerprint(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    # A fingerprint of an older pcb (md5, or size + mtime) lacks `digest`: never the same,
    # so its stage runs once more and is recorded by content from then on.
    if not isinstance(recorded, Mapping):
        return False
    keys = ("kind", "bytes", "md5", "digest", "files", "mtime_ns")
    return all(recorded.get(k) == current.get(k) for k in keys)


def dataset_fingerprint(
    dataset: Path, run_root: Path | None = None, keep: bool = False
) -> dict[str, Any]:
    """The two splits the pipeline reads (query/, bounding_box_test/) of a Market-1501 root,
    by the content of every image.

    The other folders of the archive (training images, gt_bbox) are not read by any stage,
    so a change there is no reason to preprocess again.
    """
    try:
        root = find_market_root(Path(dataset))
    except PcbError as error:
        return {"kind": "invalid", "error": str(error)}
    return {
        "kind": "dataset",
        "root": root.name,
        **{
            split: fingerprint(root / folder, run_root, keep)
            for split, folder in SPLIT_FOLDERS.items()
        },
    }


def dataset_split_folder(dataset: Path, split: str) -> Path | None:
    try:
        return find_market_root(Path(dataset)) / SPLIT_FOLDERS[split]
    except PcbError:
        return None


# ---------------------------------------------------------------- listings


def _listing_path(run_root: Path, digest: str) -> Path:
    return Path(run_root) / TREES_DIR / f"{digest}.json"


def save_listing(run_root: Path, digest: str, listing: Listing) -> None:
    path = _listing_path(run_root, digest)
    if path.is_file():
        return
    rows = {name: list(listing[name]) for name in sorted(listing)}
    text = json.dumps({"algorithm": ALGORITHM, "files": rows}, separators=(",", ":"))
    # A read-only run folder: the fingerprint stands, only the files cannot be named later.
    with contextlib.suppress(OSError, PcbError):  # PcbError: a full disk
        atomic_write_text(path, text + "\n")


def load_listing(run_root: Path, digest: str) -> Listing | None:
    """The listing saved for a recorded folder digest; None when absent or not genuine."""
    try:
        payload = read_json(_listing_path(run_root, digest))
        listing = {str(n): (int(r[0]), str(r[1])) for n, r in payload["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return listing if listing_digest(listing) == digest else None


def referenced_digests(value: Any) -> set[str]:
    """Every folder digest a manifest (or any part of it) records."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        if value.get("kind") == "tree" and isinstance(value.get("digest"), str):
            found.add(value["digest"])
        for item in value.values():
            found |= referenced_digests(item)
    elif isinstance(value, list):
        for item in value:
            found |= referenced_digests(item)
    return found


def prune_listings(run_root: Path, manifest: Mapping[str, Any]) -> None:
    """Remove the listings no fingerprint of the manifest refers to any more."""
    folder = Path(run_root) / TREES_DIR
    if not folder.is_dir():
        return
    keep = referenced_digests(manifest)
    for path in folder.glob("*.json"):
        if path.stem not in keep:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- what changed


@dataclass(frozen=True)
class FileChange:
    """One file whose content is not what was recorded; None: absent (removed, or added)."""

    name: str
    expected: str | None
    found: str | None

    def describe(self, width: int = 12) -> str:
        expected = self.expected[:width] if self.expected else "absent"
        found = self.found[:width] if self.found else "absent"
        return f"{self.name} (expected {expected}, found {found})"


def listing_changes(recorded: Listing, current: Listing) -> list[FileChange]:
    names = sorted(set(recorded) | set(current))
    changes = []
    for name in names:
        before = recorded.get(name)
        now = current.get(name)
        if before != now:
            changes.append(FileChange(name, before[1] if before else None, now[1] if now else None))
    return changes


def tree_changes(
    folder: Path, recorded: Mapping[str, Any], run_root: Path, store: DigestStore
) -> list[FileChange] | None:
    """The files of `folder` that differ from its recorded fingerprint; None when the
    recorded listing is not available (an older run, or it was removed)."""
    digest = recorded.get("digest")
    if not isinstance(digest, str):
        return None
    listing = load_listing(run_root, digest)
    if listing is None:
        return None
    try:
        current = tree_listing(folder, store) if Path(folder).is_dir() else {}
    except OSError:
        return None
    return listing_changes(listing, current)
