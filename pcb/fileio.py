"""Atomic, durable writes: a file appears complete under its final name, or not at all, and
once written it survives a power cut.

A rename is atomic but not durable: after a power cut a file renamed a moment before can
come back empty (ext4 and XFS write the rename before the data unless told otherwise). So
a file is fsynced before its rename and its folder after it. That costs a few milliseconds
per file (about 3.5 ms each for the file and the folder on this project's disk), which is
nothing for a record and more than the file itself for a per-image bin or dump: those are
written with `durable=False`, their write-back started as each is written (`start_writeback`),
and synced together by `sync_folder` (one syncfs of the file system) before anything says they
are complete: preprocessing before a split's .info list, every stage before the manifest
records it complete (pcb.cli.main.dispatch).
"""

from __future__ import annotations

import ctypes
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


def atomic_write_bytes(
    path: Path, data: bytes | bytearray | memoryview, durable: bool = True
) -> None:
    """Write `path` under a temporary name in its folder, then rename it into place.

    A reader sees the old file or the new one, never a part; the temporary file is removed
    whatever goes wrong. A full disk becomes a PcbError naming the folder. `durable`: the
    file is on the disk (fsync of the file, then of its folder) when this returns; without
    it, the caller syncs later with `sync_folder` (per-image files: one sync for them all).
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
            # Before the data, so that the fsync below covers the mode too.
            os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
            else:
                start_writeback(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(error):
            raise PcbError(disk_full_message(path.parent, path.name)) from None
        raise
    if durable:
        # The rename itself is an entry of the folder: durable once the folder is synced.
        fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# sync_file_range(2)'s flag "start writing the range's dirty pages, do not wait" (linux/fs.h).
SYNC_FILE_RANGE_WRITE = 2


def _libc(name: str, *argtypes: Any) -> Any:
    """The C library's function `name` (errno kept), or None where it lacks it."""
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    if argtypes:
        function.argtypes = list(argtypes)
    return function


_SYNC_FILE_RANGE = _libc(
    "sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint
)
_SYNCFS = _libc("syncfs", ctypes.c_int)


def start_writeback(fd: int) -> bool:
    """Have the kernel start writing the file's pages to the disk now, without waiting: the
    writes then overlap the next files' computation instead of all waiting in the one sync
    before a stage says it is done (preprocessing's 1.3 GB of bins: that sync took 0.68-1.08 s
    at the end, 0.01 s after this; WiredTiger does the same before its checkpoint fsync, in
    block_write.c). Durability still comes from that sync; False where Linux's call is
    missing or refused (nothing else changes)."""
    if _SYNC_FILE_RANGE is None:
        return False
    return _SYNC_FILE_RANGE(fd, 0, 0, SYNC_FILE_RANGE_WRITE) == 0


def _syncfs(fd: int) -> bool:
    """syncfs(2) on the file system holding `fd`; False where the C library lacks it."""
    if _SYNCFS is None:
        return False
    if _SYNCFS(fd) != 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            return False
        # Since Linux 5.8 syncfs reports a failed write-back (EIO, ENOSPC) of that file system.
        raise OSError(code, os.strerror(code))
    return True


def sync_folder(folder: Path) -> None:
    """Put every file written under `folder` on the disk: one syncfs(2) of its file system
    (one flush, however many files; measured in the README), os.sync() where syncfs is
    missing. Bins and dumps are written unsynced, then this runs once before a stage says
    they are complete."""
    folder = Path(folder)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not _syncfs(fd):
            os.sync()
    except OSError as error:
        if is_disk_full(error):
            raise PcbError(disk_full_message(folder)) from None
        raise PcbError(
            f"writing to the disk holding {folder} failed ({error.strerror}): the files "
            "written there may be damaged; check the disk (`dmesg`), then run the same "
            "command again"
        ) from None
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_record(path: Path) -> dict[str, Any]:
    """The JSON object a stage recorded in `path`; {} when there is none, it cannot be read or
    it is not an object: a record that cannot be read vouches for nothing."""
    try:
        payload = read_json(path)
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
