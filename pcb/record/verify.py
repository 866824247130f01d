"""`pcb verify --run R`: every file a run's manifest vouches for, read again and checked.

For each stage the manifest records: its status; each output, a file by its digest and a
folder file by file (from the listing saved with its fingerprint, or else from the per-split
digest records of bins and dumps); each input it read from outside the run (the checkpoint,
every dataset image), and each input from inside it that has changed since (bins re-made
after the dumps were inferred from them). No cache is believed: every file is read and
hashed, on all cores. Each mismatch is one row: file, stage, expected and found digest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..errors import PcbError
from .digest import DigestStore
from .digest_records import SUFFIX, SplitDigests
from .fingerprint import (
    MANIFEST_NAME,
    FileChange,
    dataset_split_folder,
    listing_changes,
    load_listing,
    same_fingerprint,
    tree_listing,
)
from .manifest import COMPLETE, read_manifest
from .runlock import RunLock

ABSENT = "absent"


@dataclass(frozen=True)
class Mismatch:
    """A file that is not what the manifest says `stage` wrote or read."""

    file: str
    stage: str
    expected: str
    found: str


@dataclass
class Verification:
    root: Path
    stages: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        read = f"{self.files:,} files ({self.bytes / 1e6:,.1f} MB) read in {self.seconds:.2f} s"
        if not self.mismatches:
            return (
                f"{self.root}: {self.stages} stages, {read}: every output and input matches "
                f"{MANIFEST_NAME}"
            )
        count = len(self.mismatches)
        noun = "mismatch" if count == 1 else "mismatches"
        return f"{self.root}: {count} {noun} ({self.stages} stages, {read})"

    def table(self) -> str:
        rows = [[m.file, m.stage, m.expected, m.found] for m in self.mismatches]
        return tabulate(rows, headers=["file", "stage", "expected", "found"], tablefmt="simple")


class _Reader:
    """Reads and hashes each file once per verification, counting what it read."""

    def __init__(self) -> None:
        self.store = DigestStore(None)  # in memory only: nothing cached on disk is believed
        self.seen: set[Path] = set()
        self.files = 0
        self.bytes = 0

    def _count(self, path: Path, size: int) -> None:
        resolved = path.resolve()
        if resolved not in self.seen:
            self.seen.add(resolved)
            self.files += 1
            self.bytes += size

    def file(self, path: Path) -> str | None:
        try:
            stat = os.stat(path)
            digest = self.store.digest(path, stat)
        except FileNotFoundError:
            return None
        self._count(path, stat.st_size)
        return digest

    def listing(self, folder: Path) -> dict[str, tuple[int, str]]:
        if not folder.is_dir():
            return {}
        listing = tree_listing(folder, self.store)
        for name, (size, _digest) in listing.items():
            self._count(folder / name, size)
        return listing


def _changes_by_records(folder: Path, current: Mapping[str, tuple[int, str]]) -> list[FileChange]:
    """Files of a folder against the per-split digest records in it (bins, dumps)."""
    changes = []
    for name in sorted(current):
        if not name.endswith(SUFFIX):
            continue
        record = SplitDigests.load(folder / name)
        prefix = name[: -len(SUFFIX)]
        for file, (digest, _source) in sorted(record.files.items()):
            now = current.get(f"{prefix}/{file}")
            if now is None or now[1] != digest:
                changes.append(FileChange(f"{prefix}/{file}", digest, now[1] if now else None))
    return changes


def _tree(
    reader: _Reader, root: Path, folder: Path, recorded: Mapping[str, Any], shown: str
) -> list[tuple[str, str, str]]:
    """(file, expected, found) for each file of `folder` not as `recorded`."""
    current = reader.listing(folder)
    digest = recorded.get("digest")
    listing = load_listing(root, digest) if isinstance(digest, str) else None
    if listing is not None:
        changes = listing_changes(listing, current)
    else:
        from .fingerprint import listing_digest

        changes = _changes_by_records(folder, current)
        if not changes and listing_digest(current) != digest:
            # The listing is gone and no record names the file: the folder as a whole.
            return [(f"{shown}/", f"folder digest {digest}", listing_digest(current))]
    return [(f"{shown}/{c.name}", c.expected or ABSENT, c.found or ABSENT) for c in changes]


def _check(
    reader: _Reader, root: Path, path: Path, recorded: Mapping[str, Any], shown: str
) -> list[tuple[str, str, str]] | None:
    """(file, expected, found) rows for one recorded fingerprint; None: cannot be checked
    (a fingerprint of an older pcb)."""
    kind = recorded.get("kind")
    if kind in ("file", "tree") and "content" not in recorded:
        return None
    if kind == "file":
        found = reader.file(path)
        expected = str(recorded.get("digest"))
        return [] if found == expected else [(shown, expected, found or ABSENT)]
    if kind == "tree":
        return _tree(reader, root, path, recorded, shown)
    if kind == "dataset":
        rows = []
        for split in ("query", "gallery"):
            folder = dataset_split_folder(path, split)
            split_fp = recorded.get(split)
            if folder is None:
                return [(shown, "a Market-1501 folder", "none")]
            if isinstance(split_fp, Mapping):
                rows += _check(reader, root, folder, split_fp, str(folder)) or []
        return rows
    if kind == "missing":
        return [] if not path.exists() else [(shown, ABSENT, "present")]
    return []


def _outputs_of_others(stages: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    produced: dict[str, dict[str, Any]] = {}
    for entry in stages.values():
        if isinstance(entry, Mapping) and entry.get("status") == COMPLETE:
            for name, fp in (entry.get("outputs") or {}).items():
                produced[name] = fp
    return produced


def _inputs(entry: Mapping[str, Any], root: Path) -> Iterator[tuple[str, Path, Mapping, bool]]:
    for described in (entry.get("inputs") or {}).values():
        if not isinstance(described, Mapping):
            continue
        relative = described.get("relative")
        path = root / relative if relative else Path(str(described.get("path")))
        yield str(relative or path), path, described.get("fingerprint") or {}, bool(relative)


def verify_run(root: Path) -> Verification:
    """Check every file the manifest of `root` vouches for; PcbError when it has none."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise PcbError(
            f"no {MANIFEST_NAME} in {root}: nothing to verify against. Every stage writes it "
            f"(e.g. `python -m pcb preprocess --run {root} ...`); a run copied without it "
            "cannot be verified"
        )
    start = time.perf_counter()
    result = Verification(root)
    reader = _Reader()
    stages = manifest["stages"]
    produced = _outputs_of_others(stages)
    checked_inputs: set[tuple[str, str]] = set()
    for key, entry in stages.items():
        if not isinstance(entry, Mapping):
            continue
        result.stages += 1
        status = entry.get("status")
        if status != COMPLETE:
            # Its outputs are vouched for by nobody: the stage must run again.
            result.mismatches.append(Mismatch("(stage status)", key, COMPLETE, str(status)))
            continue
        for name, fp in (entry.get("outputs") or {}).items():
            rows = _check(reader, root, root / name, fp, name)
            if rows is None:
                result.notes.append(f"{name} ({key}): recorded by an older pcb, not checked")
            for file, expected, found in rows or []:
                result.mismatches.append(Mismatch(file, key, expected, found))
        for shown, path, fp, inside in _inputs(entry, root):
            if inside and same_fingerprint(produced.get(shown), fp):
                continue  # the very output another stage recorded: checked there
            if not inside and not path.exists() and fp.get("kind") not in ("missing", "invalid"):
                result.notes.append(f"{path} ({key}): not on this host, not checked")
                continue
            seen = (shown, repr(sorted(fp.items())) if isinstance(fp, Mapping) else "")
            if seen in checked_inputs:
                continue
            checked_inputs.add(seen)
            rows = _check(reader, root, path, fp, shown)
            if rows is None:
                result.notes.append(f"{shown} ({key}): recorded by an older pcb, not checked")
            for file, expected, found in rows or []:
                result.mismatches.append(Mismatch(file, f"{key} (input)", expected, found))
    result.files, result.bytes = reader.files, reader.bytes
    result.seconds = time.perf_counter() - start
    return result


def run_verify(root: Path, quiet: bool = False) -> Verification:
    """The command: verify under the run's lock (no stage writes meanwhile) where the folder
    is writable, print the result, raise PcbError naming the fix when anything differs."""
    root = Path(root)
    if not root.is_dir():
        raise PcbError(f"run folder {root} does not exist: pass a folder made by `pcb`")
    lock = RunLock(root, "verify") if os.access(root, os.W_OK) else None
    if lock is not None:
        lock.acquire()
    try:
        result = verify_run(root)
    finally:
        if lock is not None:
            lock.release()
    if not quiet or result.mismatches:
        for note in result.notes:
            print(f"note: {note}")
    if not result.mismatches:
        print(f"pcb verify: {result.summary()}")
        return result
    print(result.table())
    stages = sorted({m.stage.split(" ")[0] for m in result.mismatches})
    raise PcbError(
        f"{result.summary()}. Run the stages named again ({', '.join(stages)}; "
        "`invoke full` runs them in order): each redoes exactly the files that differ"
    )
