"""What the unpickler builds instead of objects: plain records that hold data and run nothing.

A pickle names classes and functions and asks for them to be called. Here a name on the
allow-list becomes a `GlobalRef` (its module, name and what it stands for), never the real
class, and a "call" of one builds a record: a module becomes a `ModuleRecord` holding its
`__dict__` as a plain dict, a tensor a `TensorRef` saying where its numbers lie. No
constructor, `__setstate__` or method of anything named in the file is ever run.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from .refusal import RefusedGlobal, Unreadable, clip

# Module classes a PCB checkpoint pickles: torch.nn layers, the upstream model and
# torchvision's ResNet it holds as `base`, and DataParallel around either.
MODULE_CLASSES = frozenset(
    {
        ("torch.nn.modules.conv", "Conv2d"),
        ("torch.nn.modules.batchnorm", "BatchNorm1d"),
        ("torch.nn.modules.batchnorm", "BatchNorm2d"),
        ("torch.nn.modules.activation", "ReLU"),
        ("torch.nn.modules.pooling", "MaxPool2d"),
        ("torch.nn.modules.pooling", "AvgPool2d"),
        ("torch.nn.modules.pooling", "AdaptiveAvgPool2d"),
        ("torch.nn.modules.linear", "Linear"),
        ("torch.nn.modules.dropout", "Dropout"),
        ("torch.nn.modules.container", "Sequential"),
        ("torch.nn.parallel.data_parallel", "DataParallel"),
        ("reid.models.resnet", "ResNet"),
        ("torchvision.models.resnet", "ResNet"),
        ("torchvision.models.resnet", "Bottleneck"),
        ("torchvision.models.resnet", "BasicBlock"),
    }
)

# Storage classes named in persistent ids, by the element type they hold.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

# Every other name that may appear, and what it stands for.
FUNCTIONS = {
    ("collections", "OrderedDict"): "ordered-dict",
    ("builtins", "set"): "set",
    ("builtins", "frozenset"): "frozenset",
    ("builtins", "object"): "object",
    ("copyreg", "_reconstructor"): "reconstructor",
    # Protocol 2 writes Python 3 bytes as _codecs.encode(text, 'latin1').
    ("_codecs", "encode"): "encode",
    ("torch._utils", "_rebuild_tensor"): "tensor",
    ("torch._utils", "_rebuild_tensor_v2"): "tensor-v2",
    ("torch._utils", "_rebuild_parameter"): "parameter",
    ("torch._utils", "_rebuild_parameter_with_state"): "parameter-with-state",
    # torch 0.4.1 pickled a Parameter as Parameter(tensor, requires_grad) (pytorch#8633).
    ("torch.nn.parameter", "Parameter"): "parameter-class",
    ("torch", "Size"): "size",
    ("torch", "device"): "device",
    # Every module before torch 1.3 (pytorch#25342) held `_backend`, pickled as this call.
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): "thnn-backend",
    # open-reid training checkpoints keep best_top1 as a numpy float64.
    ("numpy.core.multiarray", "scalar"): "numpy-scalar",
    ("numpy._core.multiarray", "scalar"): "numpy-scalar",
    ("numpy", "dtype"): "numpy-dtype",
}

# Python 2 names of the same modules (what pickle's fix_imports maps).
PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


@dataclass(frozen=True)
class GlobalRef:
    """A class or function the pickle names; only a label, the real one is never imported."""

    module: str
    name: str
    kind: str
    dtype: torch.dtype | None = None

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


def resolve_global(module: Any, name: Any) -> GlobalRef:
    """The allow-list: a label for a known name, RefusedGlobal for anything else."""
    if not isinstance(module, str) or not isinstance(name, str):
        raise Unreadable("a global whose module or name is not a string")
    module = PYTHON2_MODULES.get(module, module)
    if (module, name) in MODULE_CLASSES:
        return GlobalRef(module, name, "module")
    if (module, name) in FUNCTIONS:
        return GlobalRef(module, name, FUNCTIONS[(module, name)])
    if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
        return GlobalRef(module, name, "storage-type", STORAGE_DTYPES[name])
    raise RefusedGlobal(clip(f"{module}.{name}"))


# Records compare by identity and print only their kind: their state comes from the file and
# may be nested deeper than any repr could follow.
@dataclass(eq=False, repr=False)
class ModuleRecord:
    """A pickled torch module: its class name and the `__dict__` BUILD gave it."""

    qualname: str
    state: dict[Any, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<ModuleRecord {self.qualname}>"


@dataclass(eq=False, repr=False)
class OpaqueRecord:
    """Something a checkpoint may carry that PCB never reads (a device, a numpy scalar)."""

    what: str
    state: Any = None

    def __repr__(self) -> str:
        return f"<OpaqueRecord {self.what}>"


@dataclass(frozen=True)
class StorageRef:
    """A run of `numel` elements of `dtype` stored under `key` (a view starts `offset` in)."""

    key: str
    dtype: torch.dtype
    numel: int
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass(frozen=True)
class TensorRef:
    """A tensor as a view of a storage: where it starts, its size and its strides."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    @property
    def numel(self) -> int:
        count = 1
        for extent in self.size:
            count *= extent
        return count


def describe(value: Any) -> str:
    """A short name for a value's kind, for messages (never its repr: it may be huge)."""
    if isinstance(value, ModuleRecord):
        return value.qualname
    if isinstance(value, OpaqueRecord):
        return value.what
    if isinstance(value, TensorRef):
        return "tensor"
    if isinstance(value, StorageRef):
        return "storage"
    if isinstance(value, GlobalRef):
        return value.qualname
    if isinstance(value, OrderedDict):
        return "OrderedDict"
    return type(value).__name__
