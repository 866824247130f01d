"""One pcb stage at a time per run folder: a lock file held for the stage's whole duration.

Two stages writing one run folder at once would interleave their outputs and their manifest
updates, so the second one refuses with a message naming the first. Runs into different
folders share nothing and never wait for each other.

The lock is a POSIX record lock (fcntl.lockf) on `<run>/.pcb.lock`, not flock: both are
released by the kernel when the holding process dies, so a killed run never leaves a stale
lock behind, but a flock is shared with every child forked while it is held, and the
preprocessing pool's workers, orphaned by a SIGKILL of their parent, would keep the folder
locked until they noticed. A record lock belongs to the process alone. It works across
containers too: they share the host's kernel and see the same file through the bind mount.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from ..errors import PcbError
from ..provenance import host_name, utc_now

LOCK_NAME = ".pcb.lock"
_BUSY = (errno.EACCES, errno.EAGAIN)


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it into the file (best effort)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return "another pcb process"
    if not isinstance(info, dict) or not info:
        return "another pcb process"
    return (
        f"stage {info.get('stage', '?')} (pid {info.get('pid', '?')} on "
        f"{info.get('host', '?')}, since {info.get('since', '?')})"
    )


class RunLock:
    """`with RunLock(run_folder, "preprocess"):` holds the folder's lock or raises PcbError."""

    def __init__(self, root: Path, stage: str) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.stage = stage
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise PcbError(
                f"run folder {self.root} is a file, not a folder: give --run a folder path "
                "(created when missing)"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise PcbError(
                f"cannot create the lock file {self.path} ({error.strerror}): the run folder "
                f"{self.root} must be writable; choose another --run folder or fix its "
                "permissions"
            ) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(fd)
            os.close(fd)
            if error.errno in _BUSY:
                raise PcbError(
                    f"run folder {self.root} is in use by {holder}: two stages must not write "
                    f"one run folder at once. Wait for it to finish, or give this one another "
                    f"--run folder. (The lock {self.path} is released the moment that process "
                    "ends, even if it is killed.)"
                ) from None
            raise PcbError(
                f"cannot lock {self.path} ({error.strerror}): put the run folder on a local "
                "file system that supports locks"
            ) from None
        self._fd = fd
        info = {"stage": self.stage, "pid": os.getpid(), "host": host_name(), "since": utc_now()}
        # Written in place, not renamed: a lock lives on one inode. Only the message of a
        # refused process reads it, so a torn read costs nothing but detail.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same

    def release(self) -> None:
        if self._fd is not None:
            # Closing the descriptor releases the record lock.
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
