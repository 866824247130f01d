"""Which uid:gid a stage container runs as, and giving it the folders it writes.

Never root. A caller who is not root runs its containers as itself, so what they write is
the caller's. A caller who is root (CI on a fresh clone, `sudo invoke ...`) runs them as the
owner of the results folder, so outputs belong to whoever owns results/; when that owner is
root too, as the images' own `pcb` user, uid:gid 1000:1000 (docker/export and docker/runtime
create it with that uid; in the cann and tensorrt images the uid need not have a passwd entry,
and HOME=/tmp covers what that would give).

A non-root container cannot write into a folder root owns, so before a root caller starts
one, what root owns under results/ (and under the folders demo-data writes in data/) is
handed to that uid:gid with chown, which only root may do. Ascend's own guide does the same
for its containers' mounted folders (chown -R to the running user before `docker run`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

# The `pcb` user of the export and runtime images (useradd --uid 1000 --user-group).
IMAGE_USER = (1000, 1000)


def run_as(results: Path, uid: int | None = None, gid: int | None = None) -> tuple[int, int]:
    """The uid:gid a container writing `results` runs as; see the module docstring.

    uid None means the calling process's; a uid of 0, given or found, is never returned."""
    if uid is None:
        uid = os.getuid()
        gid = os.getgid() if gid is None else gid
    if gid is None:
        gid = uid
    if uid != 0:
        return uid, gid
    try:
        owner = os.stat(results)
    except OSError:  # not made yet: root would make it, so root would own it
        return IMAGE_USER
    if owner.st_uid == 0:
        return IMAGE_USER
    return owner.st_uid, owner.st_gid or owner.st_uid


def hand_over(folders: Iterable[Path], uid: int, gid: int) -> int:
    """Make each folder (created if missing) and everything root owns inside it uid:gid's.

    Only for a root caller and a non-root target; returns the number of entries changed.
    Walks with directory descriptors and never follows a symbolic link, so a link planted
    inside the tree (by a container, say) cannot redirect the chown outside it.
    """
    if os.geteuid() != 0 or uid == 0:
        return 0
    changed = 0
    for folder in folders:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        changed += _chown_if_root(folder, None, uid, gid)
        for _, dirs, files, fd in os.fwalk(folder, follow_symlinks=False):
            for name in (*dirs, *files):
                changed += _chown_if_root(Path(name), fd, uid, gid)
    return changed


def _chown_if_root(path: Path, dir_fd: int | None, uid: int, gid: int) -> int:
    try:
        info = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        if info.st_uid != 0:
            return 0
        os.chown(path, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:  # removed while we walked
        return 0
    return 1
