"""Per-split digest records: what a stage wrote for each image, and what it made it from.

    bins/<split>.digests.json              preprocess: bin name  -> [bin digest, image digest]
    dumps/<backend>/<split>.digests.json   infer:      dump name -> [dump digest, bin digest]
                                           and the md5 of the model that made the dumps

A stage keeps a file only while it still has the digest recorded for it and was made from
the source that is there now; anything else is made again, and the stage says how many and
why. The record is written atomically, every FLUSH_S while files are being written and once
at the end, so a stage killed half-way leaves a record of nearly everything it wrote; what
it wrote after the last flush has no recorded digest and is made again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import atomic_write_text, read_json
from ..layout import RunLayout
from .digest import ALGORITHM, DigestStore

SUFFIX = ".digests.json"
FLUSH_S = 2.0
SHOWN = 5

# Why a file is made again, and how the stage words it ({n} of {total} <noun>s ...).
MISSING, DAMAGED, UNRECORDED, SOURCE = "missing", "damaged", "unrecorded", "source"


def bins_record_path(layout: RunLayout, split: str) -> Path:
    return layout.root / "bins" / f"{split}{SUFFIX}"


def dumps_record_path(layout: RunLayout, backend: str, split: str) -> Path:
    return layout.dumps_dir(backend, split).parent / f"{split}{SUFFIX}"


def is_digest_record(path: Path) -> bool:
    return path.name.endswith(SUFFIX)


@dataclass
class SplitDigests:
    """One split's record; `files` maps a file name in the split's folder to
    (its digest, the digest of what it was made from)."""

    path: Path
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    model: str | None = None
    _written: str = ""
    _flushed: float | None = None  # monotonic time of the last write; None: never

    @classmethod
    def load(cls, path: Path) -> SplitDigests:
        """The record at `path`; an empty one when absent, unreadable or of another digest."""
        record = cls(Path(path))
        try:
            payload = read_json(record.path)
        except (OSError, ValueError):
            return record
        if not isinstance(payload, dict) or payload.get("algorithm") != ALGORITHM:
            return record
        for name, row in (payload.get("files") or {}).items():
            if isinstance(row, list) and len(row) == 2:
                record.files[str(name)] = (str(row[0]), str(row[1]))
        model = payload.get("model")
        record.model = str(model) if model else None
        record._written = record._text()
        return record

    @property
    def folder(self) -> Path:
        """The folder holding the files it lists: bins/<split>/, dumps/<backend>/<split>/."""
        return self.path.parent / self.path.name[: -len(SUFFIX)]

    def put(self, name: str, digest: str, source: str) -> None:
        self.files[name] = (digest, source)

    def keep_only(self, names: set[str]) -> None:
        self.files = {n: v for n, v in self.files.items() if n in names}

    def _text(self) -> str:
        payload: dict[str, object] = {"algorithm": ALGORITHM}
        if self.model:
            payload["model"] = self.model
        payload["files"] = {name: list(self.files[name]) for name in sorted(self.files)}
        return json.dumps(payload, separators=(",", ":")) + "\n"

    def write(self) -> None:
        """Write it when it changed since read or last written."""
        text = self._text()
        if text != self._written:
            atomic_write_text(self.path, text)
            self._written = text
        self._flushed = time.monotonic()

    def flush(self) -> bool:
        """Write it when FLUSH_S passed since the last write; True when it did."""
        if self._flushed is not None and time.monotonic() - self._flushed < FLUSH_S:
            return False
        self.write()
        return True


@dataclass
class Reuse:
    """Which files of a split can be kept, and why each of the others is made again."""

    total: int
    kept: list[str] = field(default_factory=list)
    redo: dict[str, list[str]] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # every file to make, in the given order

    def add(self, reason: str, name: str) -> None:
        self.redo.setdefault(reason, []).append(name)
        self.pending.append(name)


def check_files(
    record: SplitDigests,
    names: Sequence[str],
    sources: Mapping[str, str],
    size: int,
    store: DigestStore,
) -> Reuse:
    """Whether each file of `names` (in record.folder) can be kept: it exists, has the
    expected size and its recorded digest, and was made from `sources[name]`."""
    reuse = Reuse(total=len(names))
    folder = record.folder
    for name in names:
        path = folder / name
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            reuse.add(MISSING, name)
            continue
        recorded = record.files.get(name)
        if stat.st_size != size:
            reuse.add(DAMAGED, name)
        elif recorded is None:
            reuse.add(UNRECORDED, name)
        elif store.digest(path, stat) != recorded[0]:
            reuse.add(DAMAGED, name)
        elif sources.get(name) != recorded[1]:
            reuse.add(SOURCE, name)
        else:
            reuse.kept.append(name)
    return reuse


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def describe_redo(split: str, reuse: Reuse, noun: str, source_noun: str) -> list[str]:
    """One line per reason a file is made again, e.g. "query: 3 of 48 bins did not match
    their recorded digest, redone: a.bin, b.bin, c.bin". Missing files (a first or an
    interrupted run) are the normal case and not reported here."""
    wording = {
        DAMAGED: f"{noun}s did not match their recorded digest",
        UNRECORDED: f"{noun}s had no recorded digest (written by an interrupted or older run)",
        SOURCE: f"{noun}s were made from {source_noun}s that changed since",
    }
    lines = []
    for reason in (DAMAGED, UNRECORDED, SOURCE):
        names = reuse.redo.get(reason)
        if names:
            lines.append(
                f"{split}: {len(names)} of {reuse.total} {wording[reason]}, redone: {_names(names)}"
            )
    return lines
