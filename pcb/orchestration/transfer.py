"""Files between this machine and a named volume on another Docker engine, by content.

Nothing but the engine's API travels: a helper container on the far engine mounts the run's
volumes, lists what they hold (size and BLAKE3/128 digest per file: the digest the run records
use, pcb.record.digest), and takes tar streams in (`put_archive`) or packs one to be fetched
(`get_archive`). A file goes only when the other side lacks it or holds other bytes, so a
re-run sends nothing twice, and a transfer that was cut off continues with what is missing: it
goes in batches, each file whole or not at all. After sending, the far side lists the files
again and every digest must match; a fetched file is hashed while it is written and only then
renamed into place.

Paths on the far side are container paths (/data/..., /results/...), the same ones the stage
sees; a `Root` pairs each with its folder here.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import PcbError
from ..record.digest import DIGEST_BYTES, file_digest

# Never sent either way: the run lock belongs to the process that holds it, and the digest
# cache is keyed by stat identities (inode, ctime) that only mean something on their own side.
EXCLUDED = (".pcb.lock", ".pcb/digests")
BATCH_BYTES = 64 << 20
LIST_FILE = "/tmp/pcb-transfer-list.json"
PACK_FILE = "/tmp/pcb-transfer-pack.tar"
OUT_FILE, ERR_FILE = "/tmp/pcb-transfer-out", "/tmp/pcb-transfer-err"

# The helper's program: the standard library and blake3 (the digest the run records, locked
# in every pcb image), so that any of the images runs it (runtime, cann, tensorrt, export).
# `sleep`: stay up while the transfers run; `list LISTFILE`: {path: [size, digest]} of every
# file under the paths listed; `pack LISTFILE OUT`: those files into a tar.
HELPER = r"""
import blake3, json, os, sys, tarfile, time
EXCLUDED = @EXCLUDED@
def skip(path):
    return any(("/" + e + "/") in (path + "/") for e in EXCLUDED)
def files(roots):
    for root in roots:
        if os.path.isfile(root):
            yield root
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path) and not skip(path):
                    yield path
def digest(path):
    h = blake3.blake3()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest(length=@SIZE@)
command = sys.argv[1]
if command == "sleep":
    while True:
        time.sleep(3600)
listed = json.load(open(sys.argv[2]))
if command == "list":
    out = {p: [os.path.getsize(p), digest(p)] for p in files(listed)}
    json.dump(out, sys.stdout)
elif command == "pack":
    with tarfile.open(sys.argv[3], "w") as tar:
        for path in listed:
            tar.add(path, arcname=path.lstrip("/"), recursive=False)
""".replace("@EXCLUDED@", repr(EXCLUDED)).replace("@SIZE@", str(DIGEST_BYTES))

Listing = dict[str, tuple[int, str]]  # container path -> (size, digest)


@dataclass(frozen=True)
class Root:
    """A folder here and where the far side holds it."""

    local: Path
    remote: str  # absolute container path


@dataclass
class TransferStats:
    """What went over the network, for the progress lines and docs/hosts.md's figures."""

    files_sent: int = 0
    bytes_sent: int = 0
    files_received: int = 0
    bytes_received: int = 0
    files_already: int = 0  # found identical on the other side: not sent
    bytes_already: int = 0
    seconds: float = 0.0
    batches: int = 0

    def add(self, other: TransferStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _excluded(relative: PurePosixPath) -> bool:
    return any(f"/{e}/" in f"/{relative.as_posix()}/" for e in EXCLUDED)


def local_listing(roots: Sequence[Root]) -> Listing:
    """Every file under the roots here (that exist), by container path."""
    listing: Listing = {}
    for root in roots:
        if root.local.is_file():
            listing[root.remote] = (root.local.stat().st_size, file_digest(root.local))
            continue
        if not root.local.is_dir():
            continue
        for folder, dirs, names in os.walk(root.local):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder, name)
                relative = PurePosixPath(path.relative_to(root.local).as_posix())
                if path.is_symlink() or not path.is_file() or _excluded(relative):
                    continue
                key = str(PurePosixPath(root.remote, relative))
                listing[key] = (path.stat().st_size, file_digest(path))
    return listing


def differing(source: Listing, target: Listing) -> list[str]:
    """The paths the target lacks or holds other bytes of, in order."""
    return [path for path, entry in source.items() if target.get(path) != entry]


def _to_move(
    source: Listing, target: Listing, batch_bytes: int, stats: TransferStats
) -> list[list[str]]:
    """What differs, in batches; what the target already holds counted in `stats`."""
    move = differing(source, target)
    stats.files_already = len(source) - len(move)
    stats.bytes_already = sum(source[p][0] for p in source if p not in move)
    return batches(move, source, batch_bytes)


def batches(paths: Sequence[str], listing: Listing, limit: int = BATCH_BYTES) -> list[list[str]]:
    """The paths in runs of at most `limit` bytes (a bigger file alone)."""
    out: list[list[str]] = []
    current: list[str] = []
    size = 0
    for path in paths:
        length = listing[path][0]
        if current and size + length > limit:
            out.append(current)
            current, size = [], 0
        current.append(path)
        size += length
    if current:
        out.append(current)
    return out


def local_path(path: str, roots: Sequence[Root]) -> Path:
    """The file here of a container path under one of the roots; PcbError for any other path
    (a tar from the far side names nothing outside the run's folders)."""
    pure = PurePosixPath(path)
    if ".." in pure.parts or not pure.is_absolute():
        raise PcbError(f"the remote engine sent an unsafe path {path!r}: refused")
    for root in sorted(roots, key=lambda r: len(r.remote), reverse=True):
        base = PurePosixPath(root.remote)
        if pure == base:
            return root.local
        if base in pure.parents:
            return root.local.joinpath(*pure.relative_to(base).parts)
    raise PcbError(f"the remote engine sent {path!r}, which is outside the run's folders: refused")


# ---- the helper container ----------------------------------------------------------------------


@dataclass
class Helper:
    """A running helper container on the far engine, mounting the run's volumes."""

    container: Any
    where: str  # the engine, for messages
    stage: str

    def _exec(self, *argv: str) -> bytes:
        """Run the helper's program with argv; its stdout. Detached, polled, its output read
        back from files: an attached exec over ssh:// breaks the SDK's connection as it closes
        (docker/docker-py#3218, BrokenPipeError in sshconn.close)."""
        api = self.container.client.api
        command = ["sh", "-c", f'python3 -c "$0" "$@" >{OUT_FILE} 2>{ERR_FILE}', HELPER, *argv]
        exec_id = api.exec_create(self.container.id, command, user="0:0")["Id"]
        api.exec_start(exec_id, detach=True)
        pause = 0.05
        while (state := api.exec_inspect(exec_id)).get("Running"):
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
        code = state.get("ExitCode")
        if code != 0:
            text = self.read(ERR_FILE).decode(errors="replace").strip()[-800:]
            raise PcbError(
                f"stage {self.stage} on {self.where}: the transfer helper failed "
                f"({argv[0]}, exit status {code}): {text}"
            )
        return self.read(OUT_FILE)

    def read(self, path: str) -> bytes:
        """One small file of the helper container."""
        stream, _ = self.container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            return handle.read() if handle is not None else b""

    def _put_list(self, paths: Sequence[str]) -> None:
        self.put(_tar_of({LIST_FILE: json.dumps(list(paths)).encode()}, 0, 0))

    def put(self, data: bytes | IO[bytes]) -> None:
        if not self.container.put_archive("/", data):
            raise PcbError(f"stage {self.stage} on {self.where}: the engine refused a tar upload")

    def listing(self, paths: Sequence[str]) -> Listing:
        self._put_list(paths)
        raw = json.loads(self._exec("list", LIST_FILE) or b"{}")
        return {path: (int(size), str(digest)) for path, (size, digest) in raw.items()}

    def pack(self, paths: Sequence[str]) -> Iterable[bytes]:
        self._put_list(paths)
        self._exec("pack", LIST_FILE, PACK_FILE)
        stream, _ = self.container.get_archive(PACK_FILE)
        return stream


def _tar_of(files: dict[str, bytes], uid: int, gid: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.uid, info.gid, info.mode = len(data), uid, gid, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# ---- sending and fetching ----------------------------------------------------------------------

OnBatch = Callable[[int, int], None]  # (batches done, batches in all)


def upload(
    helper: Helper,
    roots: Sequence[Root],
    uid: int,
    gid: int,
    *,
    batch_bytes: int = BATCH_BYTES,
    on_batch: OnBatch | None = None,
    stats: TransferStats | None = None,
    seen: Listing | None = None,
) -> TransferStats:
    """Send what the far side lacks under the roots, owned by uid:gid there; then check every
    sent file's digest there. An interruption leaves whole files only: a re-run sends the
    rest. `stats` (returned) counts as it goes: what an interrupted call had sent. `seen` is
    filled with what was here when it listed (what the far side holds of ours from then on:
    `download`'s `keep`)."""
    started = time.monotonic()
    stats = stats if stats is not None else TransferStats()
    # Each root's folders (and the volume's top) are uid:gid's even when nothing is sent, so
    # that the stage may write where it writes, as it may in the folder here.
    folders = {str(p) for root in roots for p in PurePosixPath(root.remote).parents}
    folders |= {root.remote for root in roots if root.local.is_dir()}
    helper.put(_folders_tar(sorted(folders - {"/"}), uid, gid))
    here = local_listing(roots)
    if seen is not None:
        seen.update(here)
    there = helper.listing([root.remote for root in roots])
    groups = _to_move(here, there, batch_bytes, stats)
    for number, group in enumerate(groups, 1):
        with tempfile.TemporaryFile() as buffer:
            _write_tar(buffer, group, roots, uid, gid)
            buffer.seek(0)
            helper.put(buffer)
        stats.batches += 1
        stats.files_sent += len(group)
        stats.bytes_sent += sum(here[p][0] for p in group)
        if on_batch:
            on_batch(number, len(groups))
    send = [path for group in groups for path in group]
    if send:
        check = helper.listing(send)
        wrong = [p for p in send if check.get(p) != here[p]]
        if wrong:
            raise PcbError(
                f"stage {helper.stage} on {helper.where}: {len(wrong)} sent file(s) arrived with "
                f"other content, e.g. {wrong[0]}; run again to resend them"
            )
    stats.seconds = time.monotonic() - started
    return stats


def _folders_tar(folders: Sequence[str], uid: int, gid: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder.lstrip("/"))
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, uid, gid
            info.mtime = int(time.time())
            tar.addfile(info)
    return buffer.getvalue()


def _write_tar(out: IO[bytes], paths: Sequence[str], roots: Sequence[Root], uid: int, gid: int):
    """The files as tar members named by their container path, with each folder above them
    under its root (so the far side's folders are uid:gid's too)."""
    folders: set[str] = set()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in paths:
            for parent in reversed(PurePosixPath(path).parents):
                name = str(parent).lstrip("/")
                if name and name not in folders:
                    folders.add(name)
                    info = tarfile.TarInfo(name)
                    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, uid, gid
                    info.mtime = int(time.time())
                    tar.addfile(info)
            source = local_path(path, roots)
            info = tar.gettarinfo(str(source), arcname=path.lstrip("/"))
            info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
            info.mode = 0o644 | (info.mode & 0o111)
            with open(source, "rb") as handle:
                tar.addfile(info, handle)


def download(
    helper: Helper,
    roots: Sequence[Root],
    *,
    batch_bytes: int = BATCH_BYTES,
    on_batch: OnBatch | None = None,
    stats: TransferStats | None = None,
    keep: Listing | None = None,
    skip: Iterable[str] = (),
) -> TransferStats:
    """Fetch what differs under the roots from the far side: each file hashed as it is written
    and renamed into place only when its digest is the listed one.

    `keep`: what was sent before the stage ran (upload's `seen`). A file the far side still
    holds exactly as it was sent is a copy of ours, not something the stage wrote: it is never
    fetched, so that a file here that changed since (another chain's stage running here
    meanwhile) is not put back to its old content. `skip`: paths never fetched (the manifest,
    which is merged entry by entry instead)."""
    started = time.monotonic()
    stats = stats if stats is not None else TransferStats()
    there = helper.listing([root.remote for root in roots])
    for path in skip:
        there.pop(path, None)
    if keep is not None:
        there = {p: entry for p, entry in there.items() if keep.get(p) != entry}
    here = local_listing(roots)
    groups = _to_move(there, here, batch_bytes, stats)
    for number, group in enumerate(groups, 1):
        with tempfile.TemporaryFile() as spool:
            for chunk in helper.pack(group):
                spool.write(chunk)
            spool.seek(0)
            received = _unpack(spool, set(group), there, roots, helper)
        stats.batches += 1
        stats.files_received += received
        stats.bytes_received += sum(there[p][0] for p in group)
        if on_batch:
            on_batch(number, len(groups))
    stats.seconds = time.monotonic() - started
    return stats


def _unpack(spool: IO[bytes], wanted: set[str], there: Listing, roots, helper: Helper) -> int:
    """The pack's files into place (get_archive wraps the pack in a tar of its own)."""
    from ..record.digest import new_hash

    done = 0
    with tarfile.open(fileobj=spool, mode="r|") as outer:
        for wrapper in outer:
            inner_file = outer.extractfile(wrapper)
            if inner_file is None:
                continue
            with tarfile.open(fileobj=inner_file, mode="r|") as inner:
                for member in inner:
                    path = "/" + member.name.lstrip("/")
                    if not member.isfile() or path not in wanted:
                        raise PcbError(
                            f"stage {helper.stage} on {helper.where}: the remote pack holds "
                            f"{member.name!r}, which was not asked for: refused"
                        )
                    target = local_path(path, roots)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    digest = new_hash()
                    source = inner.extractfile(member)
                    assert source is not None
                    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".pcb-fetch-")
                    try:
                        with os.fdopen(fd, "wb") as handle:
                            while block := source.read(1 << 20):
                                digest.update(block)
                                handle.write(block)
                        if digest.hexdigest() != there[path][1]:
                            raise PcbError(
                                f"stage {helper.stage} on {helper.where}: {path} arrived with "
                                "other content than the remote listed; run again to fetch it"
                            )
                        os.chmod(temporary, 0o644 | (member.mode & 0o111))
                        os.replace(temporary, target)
                    finally:
                        if os.path.exists(temporary):
                            os.unlink(temporary)
                    done += 1
    return done


@dataclass
class Summary:
    """Every transfer of an executor, per engine (the closing lines of a run)."""

    per_engine: dict[str, TransferStats] = field(default_factory=dict)

    def add(self, engine: str, stats: TransferStats) -> None:
        self.per_engine.setdefault(engine, TransferStats()).add(stats)


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"
