"""Thread locks of this process, one per run folder and purpose.

The run lock (runlock.py) is a record lock held by a process; threads of one process (the
chains that run platforms in parallel) also need to take turns on a folder. Keyed by the
folder's real path, so two spellings of one folder share a lock.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_GUARD = threading.Lock()


def folder_lock(purpose: str, root: Path) -> threading.Lock:
    """The process's lock of `root` for `purpose` (the same object for every caller)."""
    key = (purpose, os.path.realpath(root))
    with _GUARD:
        return _LOCKS.setdefault(key, threading.Lock())
