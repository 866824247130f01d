"""Hostile checkpoints, made here from scratch, for the loader's fault suite.

Each maker takes the path of a marker file and returns the bytes of a `.pt` file. Attacks
that run code create the marker when the file is loaded the ordinary way (`torch.load` with
`weights_only=False`), so a test can first show the attack works and then that the loader
stopped it. Resource attacks ask for memory or work far beyond PCB's; structural ones are
files of a layout torch.save never writes. `HOSTILE` lists them all with the words the
loader's refusal must contain.

The torch-format writers below (`zip_checkpoint`, `legacy_checkpoint`) follow the layouts of
`_save` and `_legacy_save` in torch/serialization.py, so a file can declare what a real one
never would (a 4 TB storage, a tensor outside its storage) while every other byte is right.
"""

from __future__ import annotations

import copy
import copyreg
import io
import os
import pickle
import struct
import subprocess
import tarfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
SYS_INFO = {
    "protocol_version": PROTOCOL_VERSION,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}
# An extension code for the copyreg registry test (codes 1-255 fit EXT1).
EXTENSION_CODE = 240


# --- pickle pieces ----------------------------------------------------------------------------


def su(text: str) -> bytes:
    """SHORT_BINUNICODE: a string of under 256 bytes (protocol 4)."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def touch_code(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


class Touch:
    """Unpickles into `os.system('touch <marker>')`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class StorageProxy:
    """A storage as torch.save declares it, with whatever size the test wants to claim."""

    def __init__(
        self, key: str, numel: int, storage_type: type = torch.FloatStorage, view: Any = None
    ) -> None:
        self.key, self.numel, self.storage_type, self.view = key, numel, storage_type, view


class TensorProxy:
    """Pickles as torch.save pickles a tensor: `_rebuild_tensor_v2(storage, offset, ...)`."""

    def __init__(self, storage: StorageProxy, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self) -> tuple[Any, ...]:
        return (torch._utils._rebuild_tensor_v2, self.args)


class _ProxyPickler(pickle.Pickler):
    def __init__(self, file: Any, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, StorageProxy):
            return None
        declared = ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return (*declared, obj.view) if self.legacy else declared


def proxy_pickle(obj: Any, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    _ProxyPickler(buffer, legacy).dump(obj)
    return buffer.getvalue()


def zip_checkpoint(
    data_pkl: bytes,
    storages: dict[str, bytes] | None = None,
    folder: str = "archive",
    extra: tuple[tuple[str, bytes], ...] = (),
    compression: int = zipfile.ZIP_STORED,
) -> bytes:
    """A zip laid out as torch.save writes it (data.pkl, data/<key>, small records)."""
    members = [(f"{folder}/data.pkl", data_pkl), (f"{folder}/byteorder", b"little")]
    members += [(f"{folder}/data/{key}", data) for key, data in (storages or {}).items()]
    members += [(f"{folder}/version", b"3\n"), *extra]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def legacy_checkpoint(
    obj_pickle: bytes,
    storages: tuple[tuple[str, int, bytes], ...] | list[tuple[str, int, bytes]] = (),
    sys_info: Any = SYS_INFO,
) -> bytes:
    """The legacy stream: magic, version, system info, the object, keys, then each storage."""
    head = b"".join(
        pickle.dumps(value, protocol=2) for value in (MAGIC_NUMBER, PROTOCOL_VERSION, sys_info)
    )
    keys = pickle.dumps([key for key, _, _ in storages], protocol=2)
    data = b"".join(struct.pack("<q", numel) + raw for _, numel, raw in storages)
    return head + obj_pickle + keys + data


def torch_save(obj: Any, legacy: bool = False, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_protocol=protocol, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def rewrite_zip(data: bytes, change: Callable[[str, bytes], bytes]) -> bytes:
    """`data` with every member passed through `change(name, content)`."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info, change(info.filename, source.read(info.filename)))
    return out.getvalue()


def legacy_pickles(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the five pickles of a legacy file."""
    import pickletools

    spans, position = [], 0
    stream = io.BytesIO(data)
    for _ in range(5):
        for _ in pickletools.genops(stream):
            pass
        spans.append((position, stream.tell()))
        position = stream.tell()
    return spans


def replace_legacy_pickle(data: bytes, index: int, replacement: bytes) -> bytes:
    start, end = legacy_pickles(data)[index]
    return data[:start] + replacement + data[end:]


def small_state() -> OrderedDict[str, torch.Tensor]:
    return OrderedDict([("base.conv1.weight", torch.arange(6.0).reshape(2, 3))])


# --- code execution ----------------------------------------------------------------------------


def global_eval_p0(marker: Path) -> bytes:
    # Protocol 0 by hand: GLOBAL builtins.eval, MARK, a string, TUPLE, REDUCE, STOP.
    return b"cbuiltins\neval\n(V" + touch_code(marker).encode() + b"\ntR."


def python2_builtin_eval(marker: Path) -> bytes:
    # Python 2's name for the builtins module, which pickle maps to `builtins`.
    return b"c__builtin__\neval\n(V" + touch_code(marker).encode() + b"\ntR."


def stack_global_exec_p4(marker: Path) -> bytes:
    # STACK_GLOBAL (module and name from the stack, not a GLOBAL line) to builtins.exec.
    code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    return b"\x80\x04" + su("builtins") + su("exec") + b"\x93" + su(code) + b"\x85R."


def raw_reduce_p5(marker: Path) -> bytes:
    # Protocol 5 as pickle writes it: FRAME, MEMOIZE, STACK_GLOBAL of posix.system.
    return pickle.dumps(Touch(marker), protocol=5)


def subprocess_call_p4(marker: Path) -> bytes:
    class Call:
        def __reduce__(self) -> tuple[Any, ...]:
            return (subprocess.call, (["touch", str(marker)],))

    return pickle.dumps(Call(), protocol=4)


def getattr_gadget(marker: Path) -> bytes:
    # getattr(__import__('os'), 'system')('touch ...'): only innocent-looking builtins named.
    return (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vtouch "
        + str(marker).encode()
        + b"\ntR."
    )


def attribute_chain_os_system(marker: Path) -> bytes:
    # Protocol 4 resolves a dotted name attribute by attribute: torch.serialization -> os.system.
    return (
        b"\x80\x04"
        + su("torch.serialization")
        + su("os.system")
        + b"\x93"
        + su(f"touch {marker}")
        + b"\x85R."
    )


def attribute_chain_builtins(marker: Path) -> bytes:
    # torch._utils._rebuild_tensor.__builtins__.get('eval')(code): an allowed function's
    # attributes lead to every builtin, and REDUCE calls whatever is on the stack.
    return (
        b"\x80\x04"
        + su("torch._utils")
        + su("_rebuild_tensor.__builtins__.get")
        + b"\x93"
        + su("eval")
        + b"\x85R"
        + su(touch_code(marker))
        + b"\x85R."
    )


def inst_p0(marker: Path) -> bytes:
    # INST: MARK, the arguments, then `i module\nname\n` calls module.name(*arguments).
    return b"(Vtouch " + str(marker).encode() + b"\nios\nsystem\n."


def obj_p1(marker: Path) -> bytes:
    # OBJ: MARK, the class (here a function), the arguments, `o` calls it.
    return b"(cos\nsystem\nVtouch " + str(marker).encode() + b"\no."


def newobj_partial(marker: Path) -> bytes:
    # NEWOBJ builds functools.partial(os.system, 'touch ...'); REDUCE with () calls it.
    return (
        b"\x80\x02cfunctools\npartial\ncos\nsystem\nVtouch "
        + str(marker).encode()
        + b"\n\x86\x81)R."
    )


def newobj_ex_partial(marker: Path) -> bytes:
    # NEWOBJ_EX (protocol 4): the same with an explicit (empty) keyword dict.
    return (
        b"\x80\x04cfunctools\npartial\ncos\nsystem\nVtouch "
        + str(marker).encode()
        + b"\n\x86}\x92)R."
    )


def build_setstate_partial(marker: Path) -> bytes:
    # BUILD runs partial.__setstate__, which swaps the harmless print for os.system.
    return (
        b"\x80\x02cfunctools\npartial\ncbuiltins\nprint\n\x85\x81"
        + b"(cos\nsystem\nVtouch "
        + str(marker).encode()
        + b"\n\x85}Ntb)R."
    )


def extension_code(marker: Path) -> bytes:
    # EXT1: an index into the copyreg extension registry instead of a name.
    return (
        b"\x80\x02\x82" + bytes([EXTENSION_CODE]) + b"Vtouch " + str(marker).encode() + b"\n\x85R."
    )


@contextmanager
def extension_registered() -> Iterator[None]:
    """os.system registered as extension EXTENSION_CODE, as a library in the process might."""
    copyreg.add_extension("os", "system", EXTENSION_CODE)
    try:
        yield
    finally:
        copyreg.remove_extension("os", "system", EXTENSION_CODE)


def zip_nested_in_state_dict(marker: Path) -> bytes:
    state = OrderedDict([*small_state().items(), ("extra", [1, {"deep": Touch(marker)}])])
    return torch_save({"state_dict": state, "epoch": 60})


def zip_protocol4(marker: Path) -> bytes:
    return torch_save({"state_dict": OrderedDict(x=Touch(marker))}, protocol=4)


def legacy_nested_in_state_dict(marker: Path) -> bytes:
    return torch_save({"state_dict": OrderedDict(x=Touch(marker))}, legacy=True)


def legacy_protocol4(marker: Path) -> bytes:
    return torch_save(OrderedDict(x=Touch(marker)), legacy=True, protocol=4)


def zip_with_malicious_data_pkl(marker: Path) -> bytes:
    # A genuine zip-format .pt whose data.pkl is swapped for the attack.
    attack = pickle.dumps(OrderedDict([("x", Touch(marker))]), protocol=2)
    return rewrite_zip(
        torch_save(small_state()),
        lambda name, data: attack if name.endswith("/data.pkl") else data,
    )


def legacy_malicious_system_info(marker: Path) -> bytes:
    # The third pickle of a legacy file, read before the object itself.
    return replace_legacy_pickle(torch_save(small_state(), legacy=True), 2, global_eval_p0(marker))


def legacy_malicious_key_list(marker: Path) -> bytes:
    # The fifth pickle, the storage keys, read after a harmless object.
    return replace_legacy_pickle(torch_save(small_state(), legacy=True), 4, global_eval_p0(marker))


def legacy_module_id_of_os_system(marker: Path) -> bytes:
    # A legacy "module" persistent id naming os.system as the module class, then calling it.
    obj = b"\x80\x02(Vmodule\ncos\nsystem\nNNtQ(Vtouch " + str(marker).encode() + b"\ntR."
    return legacy_checkpoint(obj)


def duplicate_zip_entry(marker: Path) -> bytes:
    # Two data.pkl members: zipfile reads the last one, so the harmless first hides the attack.
    benign = torch_save(small_state())
    attack = pickle.dumps(OrderedDict([("x", Touch(marker))]), protocol=2)
    buffer = io.BytesIO(benign)
    with zipfile.ZipFile(buffer, "a") as archive, _quiet_duplicates():
        archive.writestr(f"{_folder(benign)}/data.pkl", attack)
    return buffer.getvalue()


@contextmanager
def _quiet_duplicates() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name")
        yield


def _folder(data: bytes) -> str:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0]


# --- TorchScript -------------------------------------------------------------------------------


class FileWriter(nn.Module):
    """A TorchScript module whose __setstate__, run by torch.jit.load, writes `path`."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.register_buffer("weight", torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        # torch.from_file(shared=True) maps the file read-write, creating it; filling the
        # mapping writes it. Keeping the result stops TorchScript dropping the call.
        mapped = torch.from_file(self.path, True, 8, dtype=torch.uint8)
        mapped.fill_(120)
        self.weight = mapped[:2].float()


def _jit_save(module: Any) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "switch to torch.export"
        torch.jit.save(module, buffer)
    return buffer.getvalue()


def torchscript_from_file(marker: Path) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "switch to torch.compile"
        scripted = torch.jit.script(FileWriter(str(marker)))
    return _jit_save(scripted)


class _WeightsOnly(nn.Module):
    """Traces in no time whatever it wraps: the archive keeps every parameter anyway."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0


def torchscript_with_weights(model: nn.Module) -> bytes:
    """A traced model: a TorchScript archive carrying `model`'s weights under its names."""
    holder = copy.deepcopy(model)
    holder.__class__ = type("Traced" + type(model).__name__, (_WeightsOnly, type(model)), {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(holder, torch.ones(1), check_trace=False)
    return _jit_save(traced)


# --- resources ---------------------------------------------------------------------------------


def storage_bomb_zip(marker: Path) -> bytes:
    # One tensor over a storage declared at 10^12 float32 (4 TB); the data member is 4 bytes.
    storage = StorageProxy("0", 10**12)
    data_pkl = proxy_pickle({"w": TensorProxy(storage, 0, (10**12,), (1,))})
    return zip_checkpoint(data_pkl, {"0": b"\0" * 4})


def storage_bomb_legacy(marker: Path) -> bytes:
    storage = StorageProxy("1", 10**12)
    obj = proxy_pickle({"w": TensorProxy(storage, 0, (10**12,), (1,))}, legacy=True)
    return legacy_checkpoint(obj, [("1", 10**12, b"\0" * 4)])


def many_storages(marker: Path) -> bytes:
    # Five storages of 300 MB each, each under the limit, 1.5 GB together (legacy format: its
    # storage bytes come after the pickle, so nothing but the total can stop it early).
    numel = 75_000_000
    state = {f"w{i}": TensorProxy(StorageProxy(str(i), numel), 0, (numel,), (1,)) for i in range(5)}
    storages = [(str(i), numel, b"") for i in range(5)]
    return legacy_checkpoint(proxy_pickle(state, legacy=True), storages)


def stride_zero_view(marker: Path) -> bytes:
    # A one-element storage viewed as 2^40 elements with stride 0: materialised, 4 TB.
    view = TensorProxy(StorageProxy("0", 1), 0, (1 << 20, 1 << 20), (0, 0))
    return zip_checkpoint(proxy_pickle({"w": view}), {"0": b"\0" * 4})


def tensor_outside_storage(marker: Path) -> bytes:
    # 100 elements read from a storage of 2: an out-of-bounds read if materialised.
    view = TensorProxy(StorageProxy("0", 2), 0, (100,), (1,))
    return zip_checkpoint(proxy_pickle({"w": view}), {"0": b"\0" * 8})


def storage_size_mismatch(marker: Path) -> bytes:
    view = TensorProxy(StorageProxy("0", 1000), 0, (1000,), (1,))
    return zip_checkpoint(proxy_pickle({"w": view}), {"0": b"\0" * 16})


def storage_key_traversal(marker: Path) -> bytes:
    view = TensorProxy(StorageProxy("../../etc/passwd", 4), 0, (4,), (1,))
    return zip_checkpoint(proxy_pickle({"w": view}), {"0": b"\0" * 16})


def shared_module_graph(depth: int) -> nn.Module:
    """Sequentials two wide, both children the same module: 2^depth paths to one Linear."""
    module: nn.Module = nn.Linear(1, 1)
    for _ in range(depth):
        module = nn.Sequential(module, module)
    return module


def module_graph_bomb(marker: Path) -> bytes:
    # 2^40 paths: torch's state_dict() would visit a trillion modules.
    return torch_save(shared_module_graph(40))


def self_containing_module() -> nn.Module:
    module = nn.Sequential(nn.Linear(1, 1))
    module._modules["again"] = module
    return module


def self_containing(marker: Path) -> bytes:
    return torch_save(self_containing_module())


def linear_constructor(marker: Path) -> bytes:
    # Linear(65536, 65536) called by REDUCE: 16 GiB of weights allocated by the unpickler.
    return b"\x80\x02ctorch.nn.modules.linear\nLinear\nJ\x00\x00\x01\x00J\x00\x00\x01\x00\x86R."


def deep_module_chain(depth: int) -> bytes:
    """Sequential inside Sequential, `depth` deep, written opcode by opcode (pickling it
    recursively would need as deep a Python stack)."""
    head = b"\x80\x02ctorch.nn.modules.container\nSequential\nq\x00"
    head += b"X\x0b\x00\x00\x00_parametersq\x01X\x08\x00\x00\x00_buffersq\x02"
    head += b"X\x08\x00\x00\x00_modulesq\x03X\x01\x00\x00\x000q\x04"
    # A module: NEWOBJ Sequential, its state dict with empty _parameters and _buffers, and a
    # _modules dict holding the next module under "0"; closed after the child is pushed.
    opening = b"h\x00)\x81}(h\x01}h\x02}h\x03}h\x04"
    closing = b"su" + b"b"
    leaf = b"h\x00)\x81}(h\x01}h\x02}h\x03}ub"
    pop_extra = b"0"  # the stack holds the module names pushed in the head; drop them
    return head + pop_extra * 5 + opening * depth + leaf + closing * depth + b"."


def deep_modules(marker: Path) -> bytes:
    return zip_checkpoint(deep_module_chain(10_000))


def deep_lists(marker: Path) -> bytes:
    # [[[...]]] 100,000 deep: EMPTY_LIST then APPEND into the one below, from the inside out.
    depth = 100_000
    return zip_checkpoint(b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")


def deep_tuples(marker: Path) -> bytes:
    # (((...),),) 100,000 deep: hashing one as a dict key would recurse in C without limit.
    depth = 100_000
    return zip_checkpoint(b"\x80\x02)" + b"\x85" * depth + b".")


def deep_dicts_in_state_dict(marker: Path) -> bytes:
    # {'state_dict': {'k': {'k': ...}}}: dicts pushed outermost first, then each SETITEM
    # puts the top one into the dict below it.
    depth = 100_000
    body = b"}Vstate_dict\n" + b"}Vk\n" * depth + b"}" + b"s" * depth + b"s."
    return zip_checkpoint(b"\x80\x02" + body)


def _deep_list(depth: int) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)


def legacy_deep_version(marker: Path) -> bytes:
    # The version pickle a list 100,000 deep: printing it in a message would recurse.
    return pickle.dumps(MAGIC_NUMBER, protocol=2) + b"\x80\x02" + _deep_list(100_000) + b"."


def deep_persistent_id(marker: Path) -> bytes:
    # A persistent id whose type name is a list 100,000 deep.
    return zip_checkpoint(b"\x80\x02" + _deep_list(100_000) + b"\x85Q.")


def operation_bomb(marker: Path) -> bytes:
    # 1.2 million NONEs in one list: a million small objects for every 1.2 MB of file.
    return zip_checkpoint(b"\x80\x02(" + b"N" * 1_200_000 + b"l.")


def declared_length_bomb(marker: Path) -> bytes:
    # BINBYTES8 declaring 2^40 bytes, with 8 present: a loader that allocates first fails.
    return b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"\0" * 8 + b"."


def oversized_pickle_zip(marker: Path) -> bytes:
    # A data.pkl of 65 MiB (PCB's is 70 KB): refused by its size, before it is read.
    filler = 65 << 20
    return zip_checkpoint(b"\x80\x04\x8e" + struct.pack("<Q", filler) + b"\0" * filler + b".")


def oversized_pickle_legacy(marker: Path) -> bytes:
    filler = 65 << 20
    obj = b"\x80\x04\x8e" + struct.pack("<Q", filler) + b"\0" * filler + b"."
    return legacy_checkpoint(obj)


def large_bytes_payload(marker: Path) -> bytes:
    # Just under the pickle limit: 60 MiB of bytes, the most memory a pickle may make here.
    filler = 60 << 20
    return zip_checkpoint(b"\x80\x04\x8e" + struct.pack("<Q", filler) + b"\0" * filler + b".")


def huge_classifier(marker: Path) -> bytes:
    # Every PCB key, all views of one zero, but 1,000,000 classes: the model built from it
    # would need 6 GB although the file is a few KB.
    from pcb.model import PCB

    storage = StorageProxy("0", 1)
    state = {}
    for key, value in PCB(num_classes=1).state_dict().items():
        size = tuple(value.shape)
        if key.startswith("instance"):
            size = (1_000_000, *size[1:])
        state[key] = TensorProxy(storage, 0, size, tuple(0 for _ in size))
    return zip_checkpoint(proxy_pickle(state), {"0": b"\0" * 4})


# --- layouts -------------------------------------------------------------------------------------


def _zip_with(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, _quiet_duplicates():
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_traversal(marker: Path) -> bytes:
    benign = proxy_pickle(OrderedDict())
    return _zip_with([("archive/data.pkl", benign), ("../../.bashrc", b"touch pwned\n")])


def zip_absolute_name(marker: Path) -> bytes:
    benign = proxy_pickle(OrderedDict())
    return _zip_with([("archive/data.pkl", benign), ("/etc/cron.d/pcb", b"* * * * * root id\n")])


def zip_wrong_layout(marker: Path) -> bytes:
    return _zip_with([("weights/model.npy", b"\x93NUMPY"), ("weights/README", b"hello")])


def zip_two_folders(marker: Path) -> bytes:
    return _zip_with([("a/data.pkl", proxy_pickle(OrderedDict())), ("b/data/0", b"\0" * 4)])


def zip_compressed(marker: Path) -> bytes:
    return zip_checkpoint(proxy_pickle(OrderedDict()), compression=zipfile.ZIP_DEFLATED)


def legacy_tar(marker: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            info = tarfile.TarInfo(name)
            payload = global_eval_p0(marker)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def empty_file(marker: Path) -> bytes:
    return b""


def html_page(marker: Path) -> bytes:
    return b"<html>404 Not Found</html>\n"


def big_endian_legacy(marker: Path) -> bytes:
    return legacy_checkpoint(
        proxy_pickle(OrderedDict(), legacy=True), sys_info={**SYS_INFO, "little_endian": False}
    )


def text_persistent_id(marker: Path) -> bytes:
    return zip_checkpoint(b"P0\n.")


def benign_zip() -> bytes:
    return torch_save(small_state())


def benign_legacy() -> bytes:
    return torch_save(small_state(), legacy=True)


def zip_truncated(fraction: float) -> Callable[[Path], bytes]:
    def make(marker: Path) -> bytes:
        data = benign_zip()
        return data[: int(len(data) * fraction)]

    return make


def legacy_truncated(where: str) -> Callable[[Path], bytes]:
    def make(marker: Path) -> bytes:
        data = benign_legacy()
        spans = legacy_pickles(data)
        cut = {"magic": 5, "object": (spans[3][0] + spans[3][1]) // 2, "data": len(data) - 4}
        return data[: cut[where]]

    return make


@dataclass(frozen=True)
class Hostile:
    make: Callable[[Path], bytes]
    refusal: str  # words the one-line error must contain
    attack: bool = False  # creates the marker when loaded the ordinary way
    resource: bool = False  # asks for memory or work: part of the memory bound test


_UNREADABLE = "cannot read it as a PyTorch checkpoint"

HOSTILE: dict[str, Hostile] = {
    # Code execution, both file formats, protocols 0 to 5, every way pickle calls.
    "global-eval-p0": Hostile(global_eval_p0, "refused to load class `builtins.eval`", True),
    "python2-builtin-eval": Hostile(python2_builtin_eval, "class `builtins.eval`", True),
    "stack-global-exec-p4": Hostile(stack_global_exec_p4, "class `builtins.exec`", True),
    "raw-reduce-p5": Hostile(raw_reduce_p5, "system`", True),
    "subprocess-call-p4": Hostile(subprocess_call_p4, "class `subprocess.call`", True),
    "getattr-gadget": Hostile(getattr_gadget, "class `builtins.getattr`", True),
    "attribute-chain-os-system": Hostile(
        attribute_chain_os_system, "class `torch.serialization.os.system`", True
    ),
    "attribute-chain-builtins": Hostile(
        attribute_chain_builtins, "class `torch._utils._rebuild_tensor.__builtins__.get`", True
    ),
    "inst-p0": Hostile(inst_p0, "class `os.system`", True),
    "obj-p1": Hostile(obj_p1, "class `os.system`", True),
    "newobj-partial": Hostile(newobj_partial, "class `functools.partial`", True),
    "newobj-ex-partial-p4": Hostile(newobj_ex_partial, "class `functools.partial`", True),
    "build-setstate-partial": Hostile(build_setstate_partial, "class `functools.partial`", True),
    "extension-code": Hostile(extension_code, "extension code 240", True),
    "zip-nested-in-state-dict": Hostile(zip_nested_in_state_dict, "system`", True),
    "zip-protocol-4": Hostile(zip_protocol4, "system`", True),
    "zip-malicious-data-pkl": Hostile(zip_with_malicious_data_pkl, "system`", True),
    "zip-duplicate-entry": Hostile(duplicate_zip_entry, "appears twice", True),
    "legacy-nested-in-state-dict": Hostile(legacy_nested_in_state_dict, "system`", True),
    "legacy-protocol-4": Hostile(legacy_protocol4, "system`", True),
    "legacy-malicious-system-info": Hostile(
        legacy_malicious_system_info, "class `builtins.eval`", True
    ),
    "legacy-malicious-key-list": Hostile(legacy_malicious_key_list, "class `builtins.eval`", True),
    "legacy-module-id-os-system": Hostile(legacy_module_id_of_os_system, "class `os.system`", True),
    "torchscript-from-file": Hostile(torchscript_from_file, "TorchScript archive", True),
    # Memory and work.
    "storage-bomb-zip": Hostile(
        storage_bomb_zip, "of tensor storage, over the loader's limit", resource=True
    ),
    "storage-bomb-legacy": Hostile(
        storage_bomb_legacy, "of tensor storage, over the loader's limit", resource=True
    ),
    "many-storages": Hostile(many_storages, "1.1 GiB of tensor storage", resource=True),
    "stride-zero-view": Hostile(
        stride_zero_view, "declares a tensor of 1,099,511,627,776", resource=True
    ),
    "module-graph-bomb": Hostile(module_graph_bomb, "is the same module as", resource=True),
    "self-containing-module": Hostile(self_containing, "contains itself", resource=True),
    "linear-constructor": Hostile(
        linear_constructor, "calls the constructor of torch.nn.modules.linear.Linear", resource=True
    ),
    "deep-modules-10k": Hostile(deep_modules, "modules nest deeper than 200", resource=True),
    "deep-lists-100k": Hostile(deep_lists, "holds a list, not a model", resource=True),
    "deep-tuples-100k": Hostile(deep_tuples, "nests tuples deeper than 200", resource=True),
    "deep-dicts-100k": Hostile(deep_dicts_in_state_dict, "its state_dict is a dict", resource=True),
    "legacy-deep-version": Hostile(
        legacy_deep_version, "legacy format version list, not 1001", resource=True
    ),
    "deep-persistent-id": Hostile(
        deep_persistent_id, "a persistent id whose type is a list", resource=True
    ),
    "operation-bomb": Hostile(operation_bomb, "more than 1,000,000 operations", resource=True),
    "declared-length-bomb": Hostile(declared_length_bomb, "cut short", resource=True),
    "oversized-pickle-zip": Hostile(
        oversized_pickle_zip, "over the loader's limit of 64.0 MiB", resource=True
    ),
    "oversized-pickle-legacy": Hostile(
        oversized_pickle_legacy, "larger than 64.0 MiB", resource=True
    ),
    "large-bytes-payload": Hostile(
        large_bytes_payload, "holds a bytes, not a model", resource=True
    ),
    "huge-classifier": Hostile(
        huge_classifier, "its classifier has 1,000,000 classes", resource=True
    ),
    # Layouts torch.save never writes, and broken files.
    "tensor-outside-storage": Hostile(
        tensor_outside_storage, "reaches element 99 of a storage of 2"
    ),
    "storage-size-mismatch": Hostile(
        storage_size_mismatch, "holds 16 bytes, its pickle declares 4,000"
    ),
    "storage-key-traversal": Hostile(storage_key_traversal, "a storage whose key is not a number"),
    "zip-traversal": Hostile(
        zip_traversal, "zip member `../../.bashrc` has an absolute, parent-relative"
    ),
    "zip-absolute-name": Hostile(zip_absolute_name, "zip member `/etc/cron.d/pcb` has an absolute"),
    "zip-wrong-layout": Hostile(
        zip_wrong_layout, "not one torch.save writes (member `weights/model.npy`)"
    ),
    "zip-two-folders": Hostile(zip_two_folders, "not one torch.save writes"),
    "zip-compressed": Hostile(zip_compressed, "is compressed"),
    "legacy-tar": Hostile(legacy_tar, "is a tar archive"),
    "empty-file": Hostile(empty_file, "the file is empty"),
    "html-page": Hostile(html_page, _UNREADABLE),
    "big-endian-legacy": Hostile(big_endian_legacy, "big-endian"),
    "text-persistent-id": Hostile(text_persistent_id, "text persistent id"),
    "zip-truncated-10": Hostile(zip_truncated(0.1), _UNREADABLE),
    "zip-truncated-50": Hostile(zip_truncated(0.5), _UNREADABLE),
    "zip-truncated-99": Hostile(zip_truncated(0.99), _UNREADABLE),
    "legacy-truncated-magic": Hostile(legacy_truncated("magic"), "cut short"),
    "legacy-truncated-object": Hostile(legacy_truncated("object"), "cut short"),
    "legacy-truncated-data": Hostile(legacy_truncated("data"), "tensor data is cut short"),
}
