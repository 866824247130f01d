"""The two file formats torch.save writes, read without torch.load and checked as they are read.

- zip (torch >= 1.6): `<archive>/data.pkl` is the pickle, `<archive>/data/<key>` the bytes
  of each storage, plus a few small records (`version`, `byteorder`, ...).
- legacy stream (torch < 1.6, and so most likely PCB_3_7.pt): five pickles in a row (magic
  number, protocol version, system info, the object, the list of storage keys), then each
  storage as an 8-byte little-endian element count and its bytes, in the order of that list.

The layouts are those of `_save` and `_legacy_save` in torch/serialization.py. Anything else
is refused before a pickle is read: TorchScript archives (their loader runs the code they
carry), zips of another layout or with odd member names, tar files, compressed members.
"""

from __future__ import annotations

import mmap
import re
import struct
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .inert import GlobalRef, StorageRef, describe
from .limits import Limits, human_bytes
from .refusal import Refused, Unreadable, clip
from .unpickler import Budget, unpickle

# torch/serialization.py: MAGIC_NUMBER and PROTOCOL_VERSION open every legacy file.
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
# Records torch.save puts beside data.pkl and data/<key> (Python side and PyTorchStreamWriter).
ZIP_RECORDS = frozenset(
    {
        "data.pkl",
        "version",
        ".data/version",
        "byteorder",
        ".format_version",
        ".storage_alignment",
        ".data/serialization_id",
    }
)
STORAGE_MEMBER = re.compile(r"data/[0-9]{1,32}")
STORAGE_KEY = re.compile(r"[0-9]{1,32}")
# Members only torch.jit.save writes: compiled code, its constants, extra files.
TORCHSCRIPT_PREFIXES = ("code/", "constants/", "extra/")
TORCHSCRIPT_RECORDS = frozenset({"constants.pkl", "bytecode.pkl", "model.json", "attributes.pkl"})


@dataclass
class Checkpoint:
    """The unpickled object and where each storage's bytes are."""

    payload: Any
    read_storage: Callable[[StorageRef], bytes]
    byteorder: str  # "little" or "big": how the storage bytes are laid out


class StorageTable:
    """Storages the pickle declares: one type and size per key, all within the byte limit."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.roots: dict[str, StorageRef] = {}
        self.total = 0

    def declare(self, key: Any, storage_type: Any, numel: Any) -> StorageRef:
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not (isinstance(key, str) and STORAGE_KEY.fullmatch(key)):
            raise Unreadable("a storage whose key is not a number")
        if not (isinstance(storage_type, GlobalRef) and storage_type.kind == "storage-type"):
            raise Unreadable(f"a storage whose type is a {describe(storage_type)}")
        if not (isinstance(numel, int) and not isinstance(numel, bool) and numel >= 0):
            raise Unreadable(f"storage {key} with a size that is not a count")
        root = StorageRef(key, storage_type.dtype, numel)
        known = self.roots.get(key)
        if known is not None:
            if known != root:
                raise Unreadable(f"storage {key} declared twice with different types or sizes")
            return known
        self.total += root.nbytes
        if self.total > self.limits.storage_bytes:
            raise Refused(
                f"declares {human_bytes(self.total)} of tensor storage, over the loader's limit "
                f"of {human_bytes(self.limits.storage_bytes)} (PCB's weights take 104 MiB)"
            )
        self.roots[key] = root
        return root


def _typename(persistent_id: Any) -> str:
    if not isinstance(persistent_id, tuple) or not persistent_id:
        raise Unreadable(f"a persistent id that is a {describe(persistent_id)}")
    name = persistent_id[0]
    if isinstance(name, bytes):
        return name.decode("ascii", "replace")
    if not isinstance(name, str):
        raise Unreadable(f"a persistent id whose type is a {describe(name)}")
    return name


@contextmanager
def open_checkpoint(path: Path, limits: Limits) -> Iterator[Checkpoint]:
    """Read `path` by its format; storage bytes stay readable until the block ends."""
    with open(path, "rb") as handle:
        head = handle.read(512)
        if not head:
            raise Unreadable("the file is empty")
        if head.startswith(ZIP_SIGNATURES):
            with _open_zip(handle) as archive:
                yield _read_zip(path, archive, limits)
        elif head[257:262] == b"ustar":
            raise Refused(
                "is a tar archive, the legacy tar format of early PyTorch releases, which this "
                "loader does not read; load it with that PyTorch in an environment you trust "
                "and save its state_dict with torch.save"
            )
        else:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield _read_legacy(data, limits)


# --- zip -------------------------------------------------------------------------------------


@contextmanager
def _open_zip(handle: Any) -> Iterator[zipfile.ZipFile]:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as error:
        raise Unreadable(f"a zip archive that cannot be read: {clip(str(error), 80)}") from None
    with archive:
        yield archive


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as error:
        raise Unreadable(f"zip member {clip(info.filename)}: {clip(str(error), 80)}") from None


def _check_zip_layout(path: Path, infos: list[zipfile.ZipInfo]) -> str:
    """The archive folder name, once every member is one torch.save writes."""
    if not infos:
        raise Unreadable("an empty zip archive")
    names = [info.filename for info in infos]
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ":" in name or {"", ".", ".."} & set(parts):
            raise Refused(
                f"zip member `{clip(name)}` has an absolute, parent-relative or folder name; "
                "torch.save writes none"
            )
    duplicate = next((name for name, n in Counter(names).items() if n > 1), None)
    if duplicate is not None:
        raise Refused(f"zip member `{clip(duplicate)}` appears twice; torch.save writes each once")
    folders = {name.split("/", 1)[0] for name in names}
    inner = [name.split("/", 1)[1] if "/" in name else "" for name in names]
    if any(n in TORCHSCRIPT_RECORDS or n.startswith(TORCHSCRIPT_PREFIXES) for n in inner):
        raise Refused(
            "is a TorchScript archive (it has code/ and constants.pkl); loading one runs the "
            "code it carries, so it is refused. In an environment you trust, save its weights: "
            f"`m = torch.jit.load('{clip(path.name, 60)}'); "
            "torch.save(m.state_dict(), 'weights.pt')`, then pass weights.pt"
        )
    unexpected = [
        names[i]
        for i, n in enumerate(inner)
        if len(folders) > 1 or not (n in ZIP_RECORDS or STORAGE_MEMBER.fullmatch(n))
    ]
    if unexpected or "data.pkl" not in inner:
        what = f"member `{clip(unexpected[0])}`" if unexpected else "no data.pkl"
        raise Refused(
            f"is a zip archive but not one torch.save writes ({what}); expected "
            "<folder>/data.pkl, <folder>/data/<n> and torch's small records"
        )
    for info in infos:
        if info.flag_bits & 0x1:
            raise Refused(f"zip member `{clip(info.filename)}` is encrypted")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise Refused(
                f"zip member `{clip(info.filename)}` is compressed; torch.save stores every "
                "member as it is"
            )
    return folders.pop()


def _read_zip(path: Path, archive: zipfile.ZipFile, limits: Limits) -> Checkpoint:
    infos = archive.infolist()
    folder = _check_zip_layout(path, infos)
    members = {info.filename: info for info in infos}
    pickle_info = members[f"{folder}/data.pkl"]
    if pickle_info.file_size > limits.pickle_bytes:
        raise Refused(
            f"its pickle is {human_bytes(pickle_info.file_size)}, over the loader's limit of "
            f"{human_bytes(limits.pickle_bytes)} (PCB's is under 1 MiB)"
        )
    byteorder = "little"
    byteorder_info = members.get(f"{folder}/byteorder")
    if byteorder_info is not None:
        mark = _read_member(archive, byteorder_info) if byteorder_info.file_size <= 8 else b""
        if mark not in (b"little", b"big"):
            raise Unreadable("a byteorder record that is neither little nor big")
        byteorder = mark.decode()
    table = StorageTable(limits)

    def persistent_load(persistent_id: Any) -> StorageRef:
        if _typename(persistent_id) != "storage" or len(persistent_id) != 5:
            raise Unreadable("a persistent id that is not a storage")
        _, storage_type, key, _location, numel = persistent_id
        storage = table.declare(key, storage_type, numel)
        info = members.get(f"{folder}/data/{storage.key}")
        if info is None:
            raise Unreadable(f"storage {storage.key} has no data/{storage.key} in the archive")
        if info.file_size != storage.nbytes:
            raise Unreadable(
                f"data/{storage.key} holds {info.file_size:,} bytes, its pickle declares "
                f"{storage.nbytes:,}"
            )
        return storage

    payload, _ = unpickle(_read_member(archive, pickle_info), 0, Budget(limits), persistent_load)

    def read_storage(storage: StorageRef) -> bytes:
        return _read_member(archive, members[f"{folder}/data/{storage.key}"])

    return Checkpoint(payload, read_storage, byteorder)


# --- legacy stream -----------------------------------------------------------------------------


def _read_legacy(data: Any, limits: Limits) -> Checkpoint:
    budget = Budget(limits)
    magic, position = unpickle(data, 0, budget)
    if type(magic) is not int or magic != MAGIC_NUMBER:
        raise Unreadable("no torch.save magic number at the start: not a PyTorch checkpoint")
    version, position = unpickle(data, position, budget)
    if type(version) is not int or version != PROTOCOL_VERSION:
        shown = version if type(version) is int and abs(version) < 10**9 else describe(version)
        raise Unreadable(f"legacy format version {shown}, not {PROTOCOL_VERSION}")
    system, position = unpickle(data, position, budget)
    if not isinstance(system, dict) or system.get("little_endian") is not True:
        raise Refused(
            "was saved on a big-endian machine (or says nothing of its byte order); only "
            "little-endian legacy checkpoints are read"
        )
    table = StorageTable(limits)

    def persistent_load(persistent_id: Any) -> Any:
        typename = _typename(persistent_id)
        if typename == "module" and len(persistent_id) == 4:
            # ("module", class, source file, source): the class, and source text to ignore.
            cls = persistent_id[1]
            if not (isinstance(cls, GlobalRef) and cls.kind == "module"):
                raise Unreadable(f"a module persistent id for a {describe(cls)}")
            return cls
        if typename != "storage" or len(persistent_id) != 6:
            raise Unreadable("a persistent id that is neither a storage nor a module class")
        _, storage_type, key, _location, numel, view = persistent_id
        root = table.declare(key, storage_type, numel)
        if view is None:
            return root
        # (view key, element offset, element count): part of the root storage.
        if not (isinstance(view, tuple) and len(view) == 3):
            raise Unreadable("a storage view that is not (key, offset, size)")
        offset, count = view[1], view[2]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in view[1:]):
            raise Unreadable("a storage view with a negative or non-integer offset or size")
        if offset + count > root.numel:
            raise Unreadable(f"a view past the end of storage {root.key}")
        return StorageRef(root.key, root.dtype, count, offset)

    payload, position = unpickle(data, position, budget, persistent_load)
    keys, position = unpickle(data, position, budget)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise Unreadable("the list of storage keys after the pickle is not a list of names")
    if len(set(keys)) != len(keys) or set(keys) != set(table.roots):
        raise Unreadable("the storage keys after the pickle do not match the storages it uses")
    offsets: dict[str, int] = {}
    for key in keys:
        root = table.roots[key]
        header = bytes(data[position : position + 8])
        if len(header) < 8 or position + 8 + root.nbytes > len(data):
            raise Unreadable(
                f"the tensor data is cut short: storage {key} ends past byte {len(data):,}, "
                "the end of the file"
            )
        (count,) = struct.unpack("<q", header)
        if count != root.numel:
            raise Unreadable(
                f"storage {key} holds {count:,} elements, its pickle declares {root.numel:,}"
            )
        offsets[key] = position + 8
        position += 8 + root.nbytes

    def read_storage(storage: StorageRef) -> bytes:
        start = offsets[storage.key]
        return bytes(data[start : start + table.roots[storage.key].nbytes])

    return Checkpoint(payload, read_storage, "little")
