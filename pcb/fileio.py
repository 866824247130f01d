"""Atomic writes: a file appears complete under its final name, or not at all."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import PcbError

# "No space left on device" and "disk quota exceeded": the user's fix is the same for both.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs get the permissions a plain open() would give.
_FILE_MODE = 0o666 & ~_umask()


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full_message(folder: Path, what: str = "") -> str:
    """What a full disk means for a stage's outputs, and the fix."""
    writing = f" while writing {what}" if what else ""
    return (
        f"no space left on the device holding {folder}{writing}: free space there "
        f"(`df -h {folder}` shows how much is left) or use a --run folder on a larger disk, "
        "then run the same command again; files already complete are kept and the stage "
        "continues where it stopped (nothing half-written was left behind)"
    )


def atomic_write_bytes(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write `path` under a temporary name in its folder, then rename it into place.

    A reader sees the old file or the new one, never a part; the temporary file is removed
    whatever goes wrong. A full disk becomes a PcbError naming the folder.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        if is_disk_full(error):
            raise PcbError(disk_full_message(path.parent, path.name)) from None
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(error):
            raise PcbError(disk_full_message(path.parent, path.name)) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
