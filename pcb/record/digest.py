"""Content digests of the files a run reads and writes, and the cache that spares re-reading
a file that has not changed.

The digest is BLAKE3 with a 128-bit output (the blake3 package): collisions are out of reach
for damage of any kind, and it is a cryptographic hash. Chosen for speed, since the digest of
every bin is the largest single cost of preprocessing an image after the image itself:
measured on this project's 2-core AMD EPYC (Python 3.11, 589,824-byte bins, best of 5 x 200),
blake3 6,360 MB/s (0.093 ms a bin) against hashlib's sha256 1,770 MB/s (0.333 ms, with the
CPU's SHA extensions) and blake2b 746 MB/s (0.79 ms); xxh3_128 (15 GB/s) is not a
cryptographic hash. new_hash and ALGORITHM are the only places to change; a record of
another algorithm (blake2b-128 before) is never believed, only redone.
A 19,281-image Market-1501 run has 11.4 GB of bins, so hashing them all on every re-run
would cost about 2 s of a core (6.4 s with sha256); the cache makes a re-run with nothing
changed cost one stat per file.

The cache lives in `<run>/.pcb/digests/`, one small JSON file per folder, each file's entry
keyed by its stat identity (size, mtime_ns, ctime_ns, inode). ctime is in the key because no
program can set it back: a rewrite in place that restores the old mtime (os.utime) still
moves it, and so does a copy over the file. Two ways an entry is made:

- a stage that writes a file gives the digest of the bytes it wrote and the identity
  stat'ed right after the write (`remember`): nothing is read back;
- any other file is read and hashed. As in git's "racy clean" rule, a file changed less
  than RACY_NS before it was read is not remembered on disk (file system timestamps are
  coarse, so a later same-size rewrite in the same tick could keep the key); this process
  still uses the digest, and the next process reads the file again.

What the key cannot see: a same-size rewrite in place by another program within one tick
of the file system's timestamp clock (milliseconds on ext4 or xfs) after the file's last
change. `pcb verify` re-reads every file and sees that too.
A cache that cannot be written (a read-only run folder) costs only the reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..fileio import atomic_write_text, read_json

ALGORITHM = "blake3-128"
DIGEST_BYTES = 16
RACY_NS = 2_000_000_000
MD5_TOO_FROM = 8 << 20
CACHE_DIR = Path(".pcb") / "digests"
_BLOCK = 1 << 20
# blake3's update releases the GIL on large inputs (1.6 x with 2 threads, measured), so
# threads use every core.
_THREADS = max(1, os.cpu_count() or 1)
_PARALLEL_FROM = 8

Identity = tuple[int, int, int, int]


def _blake3_module() -> Any:
    """blake3, imported where a digest is first needed: the modules that only may digest
    (pcb.infer on a bare GPU host, scripts/gpu-measure) import without it."""
    try:
        import blake3
    except ModuleNotFoundError:
        raise PcbError(
            "the run's content digests need the blake3 package: `pip install blake3` (a "
            "dependency of pcb-bench, in every pcb image)"
        ) from None
    return blake3


class _Blake3:
    """BLAKE3 whose hex digest is DIGEST_BYTES bytes long (a prefix of its longer outputs)."""

    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = _blake3_module().blake3()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest(length=DIGEST_BYTES)


def new_hash() -> Any:
    """The one place the digest is chosen (with ALGORITHM, which every record names, so a
    record of another algorithm is never believed, only redone)."""
    return _Blake3()


def bytes_digest(data: bytes | bytearray | memoryview) -> str:
    """The digest of bytes in memory: what a stage records for a file it writes."""
    digest = new_hash()
    digest.update(data)
    return digest.hexdigest()


def file_digests(path: Path, md5: bool = False) -> tuple[str, str | None]:
    """(the digest, md5 or None) of a file's content, from one read."""
    digest = new_hash()
    other = hashlib.md5() if md5 else None
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
            if other is not None:
                other.update(block)
    return digest.hexdigest(), other.hexdigest() if other is not None else None


def file_digest(path: Path) -> str:
    return file_digests(path)[0]


def identity(stat: os.stat_result) -> Identity:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@dataclass
class _Entry:
    identity: Identity
    digest: str
    md5: str | None = None
    keep: bool = True  # written to disk; False: racy, this process only

    def row(self) -> list[Any]:
        return [*self.identity, self.digest, self.md5]


class _Folder:
    """The cache of one folder: file name -> entry."""

    def __init__(self, key: str, file: Path | None) -> None:
        self.key = key
        self.file = file
        self.entries: dict[str, _Entry] = {}
        self.dirty = False
        if file is not None:
            self._load(file)

    def _load(self, file: Path) -> None:
        try:
            payload = read_json(file)
        except (OSError, ValueError):
            return  # absent or damaged: the files are read again
        if not isinstance(payload, dict) or payload.get("algorithm") != ALGORITHM:
            return
        for name, row in (payload.get("files") or {}).items():
            try:
                size, mtime, ctime, inode, digest, md5 = row
                self.entries[name] = _Entry((size, mtime, ctime, inode), str(digest), md5)
            except (TypeError, ValueError):
                continue

    def save(self) -> None:
        if self.file is None or not self.dirty:
            return
        rows = {name: e.row() for name, e in sorted(self.entries.items()) if e.keep}
        payload = {"algorithm": ALGORITHM, "folder": self.key, "files": rows}
        # Read-only or full (a PcbError then): the digests are right, only not remembered.
        with contextlib.suppress(OSError, PcbError):
            atomic_write_text(self.file, json.dumps(payload, separators=(",", ":")) + "\n")
            self.dirty = False


class DigestStore:
    """Digests of files, cached in a run folder (or in memory only when `run_root` is None).

    Folders inside the run are keyed by their run-relative path, so the host and a container
    (which mounts the run elsewhere) share one cache; folders outside it by absolute path.
    """

    def __init__(self, run_root: Path | None) -> None:
        self.root = Path(run_root).resolve() if run_root is not None else None
        self._folders: dict[Path, _Folder] = {}
        self._by_name: dict[str, _Folder] = {}

    def _folder(self, folder: Path) -> _Folder:
        # By the path as given first: resolving costs system calls, and this runs per file.
        known = self._by_name.get(str(folder))
        if known is not None:
            return known
        resolved = folder.resolve()
        cached = self._folders.get(resolved)
        if cached is not None:
            self._by_name[str(folder)] = cached
            return cached
        file = None
        key = str(resolved)
        if self.root is not None:
            try:
                key = "run:" + resolved.relative_to(self.root).as_posix()
            except ValueError:
                key = "abs:" + key
            name = hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()
            file = self.root / CACHE_DIR / f"{name}.json"
        made = _Folder(key, file)
        self._folders[resolved] = self._by_name[str(folder)] = made
        return made

    def _cached(self, path: Path, stat: os.stat_result, md5: bool) -> _Entry | None:
        entry = self._folder(path.parent).entries.get(path.name)
        if entry is None or entry.identity != identity(stat):
            return None
        if md5 and entry.md5 is None:
            return None
        return entry

    def _hash(self, path: Path, stat: os.stat_result, md5: bool) -> _Entry:
        now = time.time_ns()
        # Files this large are checkpoints and models, which records name by md5 too: both
        # digests from one read.
        digest, md5_digest = file_digests(path, md5 or stat.st_size >= MD5_TOO_FROM)
        after = os.stat(path)
        if identity(after) != identity(stat):
            # Changed while being read: the digest describes neither version for sure.
            return _Entry(identity(after), digest, md5_digest, keep=False)
        racy = max(stat.st_mtime_ns, stat.st_ctime_ns) > now - RACY_NS
        return _Entry(identity(stat), digest, md5_digest, keep=not racy)

    def _store(self, path: Path, entry: _Entry) -> None:
        folder = self._folder(path.parent)
        previous = folder.entries.get(path.name)
        folder.entries[path.name] = entry
        if entry.keep and (previous is None or previous.row() != entry.row() or not previous.keep):
            folder.dirty = True

    def entry(self, path: Path, stat: os.stat_result | None = None, md5: bool = False) -> _Entry:
        path = Path(path)
        stat = stat or os.stat(path)
        found = self._cached(path, stat, md5)
        if found is not None:
            return found
        made = self._hash(path, stat, md5)
        if made.identity == identity(stat):
            self._store(path, made)
        return made

    def digest(self, path: Path, stat: os.stat_result | None = None) -> str:
        """The file's digest, read only when its stat identity is not cached."""
        return self.entry(path, stat).digest

    def md5(self, path: Path) -> str:
        """The file's md5 (checkpoints and models are recorded by md5), cached alike."""
        md5 = self.entry(path, md5=True).md5
        assert md5 is not None
        return md5

    def folder_digests(
        self, folder: Path, files: Sequence[tuple[str, os.stat_result]]
    ) -> list[str]:
        """Digests of files of one folder, by name and stat, in order; the ones not cached
        are read on every core. A folder of 19,000 unchanged files costs a dictionary
        look-up per file on top of the stat its caller made."""
        cache = self._folder(folder)
        results: list[str | None] = []
        missing: list[int] = []
        for index, (name, stat) in enumerate(files):
            entry = cache.entries.get(name)
            hit = entry is not None and entry.identity == identity(stat)
            results.append(entry.digest if hit and entry is not None else None)
            if not hit:
                missing.append(index)
        paths = {index: folder / files[index][0] for index in missing}
        if len(missing) >= _PARALLEL_FROM and _THREADS > 1:
            with ThreadPoolExecutor(_THREADS) as pool:
                made = list(pool.map(lambda i: self._hash(paths[i], files[i][1], False), missing))
        else:
            made = [self._hash(paths[i], files[i][1], False) for i in missing]
        for index, entry in zip(missing, made):
            if entry.identity == identity(files[index][1]):
                self._store(paths[index], entry)
            else:
                # Changed while read: this call reports what it read, nothing is kept.
                cache.entries.pop(files[index][0], None)
            results[index] = entry.digest
        return [str(r) for r in results]

    def digests(self, paths: Sequence[tuple[Path, os.stat_result]]) -> list[str]:
        """Digests of files anywhere, in order (grouped by folder for the cache)."""
        by_folder: dict[Path, list[int]] = {}
        for index, (path, _stat) in enumerate(paths):
            by_folder.setdefault(path.parent, []).append(index)
        results: list[str] = [""] * len(paths)
        for folder, indexes in by_folder.items():
            files = [(paths[i][0].name, paths[i][1]) for i in indexes]
            for index, digest in zip(indexes, self.folder_digests(folder, files)):
                results[index] = digest
        return results

    def remember(
        self, path: Path, digest: str, md5: str | None = None, stat: os.stat_result | None = None
    ) -> None:
        """A file this process just wrote: its digest, from the bytes written, is kept under
        the identity stat'ed now, so that nobody reads it back to hash it."""
        path = Path(path)
        self._store(path, _Entry(identity(stat or os.stat(path)), digest, md5))

    def save(self) -> None:
        """Write the folders' caches that gained entries (best effort)."""
        for folder in self._folders.values():
            folder.save()


# One store per run folder and process: stages, the manifest wrapper and the report share
# what was hashed or written, and every look-up still checks the file's stat first.
_STORES: dict[Path | None, DigestStore] = {}


def digest_store(run_root: Path | None) -> DigestStore:
    key = Path(run_root).resolve() if run_root is not None else None
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = DigestStore(key)
    return store


def save_stores() -> None:
    for store in _STORES.values():
        store.save()


def cached_md5(path: Path, run_root: Path | None) -> str:
    """The md5 of a checkpoint or model, read again only when its stat identity changed."""
    return digest_store(run_root).md5(Path(path))


def digest_lines(entries: Iterable[tuple[str, int, str]]) -> str:
    """One digest over (relative path, size, digest) triples: a folder's content digest."""
    combined = new_hash()
    for name, size, digest in sorted(entries):
        # surrogateescape: a file name that is not UTF-8 is hashed as its bytes, not a crash.
        combined.update(f"{name}\0{size}\0{digest}\n".encode("utf-8", "surrogateescape"))
    return combined.hexdigest()
