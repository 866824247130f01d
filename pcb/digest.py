"""md5 of large files (checkpoint, models), remembered per file identity within a run folder.

Every stage that decides whether its work is current hashes a 100 MB model or checkpoint;
four such hashes were a fifth of a re-run of the demo pipeline with nothing to do. The digest
is kept in `<run>/.md5-cache.json` under the file's path, keyed by (size, mtime in ns, inode):
any rewrite (atomic_write_bytes makes a new inode, an edit changes mtime) misses the cache and
hashes the file again. As in git's "racy clean" rule, a file modified less than RACY_NS before
it is hashed is not remembered: file system timestamps are coarse (a few ms on ext4), so an
in-place rewrite of the same size right after could otherwise keep the same key.
A cache that cannot be written (a read-only mount) only costs the hash.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from .fileio import atomic_write_json, file_md5, read_json

CACHE_NAME = ".md5-cache.json"
RACY_NS = 2_000_000_000


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _read(cache: Path) -> dict[str, Any]:
    try:
        payload = read_json(cache)
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def cached_md5(path: Path, run_root: Path | None) -> str:
    """file_md5(path), reusing the digest cached in run_root when the file is unchanged."""
    path = Path(path)
    if run_root is None:
        return file_md5(path)
    cache = Path(run_root) / CACHE_NAME
    key = str(path.resolve())
    stat = path.stat()
    identity = _identity(stat)
    entries = _read(cache)
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("identity") == identity and entry.get("md5"):
        return str(entry["md5"])
    digest = file_md5(path)
    if time.time_ns() - stat.st_mtime_ns < RACY_NS:
        return digest  # too fresh to tell a later same-size rewrite apart: not remembered
    # Re-read before writing: another stage may have added its own file meanwhile.
    entries = _read(cache)
    entries[key] = {"identity": identity, "md5": digest}
    # Read-only or full: the digest is still right, only not remembered.
    with contextlib.suppress(OSError):
        atomic_write_json(cache, entries)
    return digest
