"""Load PCB checkpoints in the three formats met in practice, without running their code.

A `.pt` file is a pickle, and unpickling can call anything. The loader resolves every
global through an allow-list (tensor rebuilders, storages, OrderedDict, torch.nn layers,
and the upstream `reid` / torchvision model classes mapped to a plain module stand-in),
so a whole pickled upstream model loads without `reid` or torchvision installed and a
crafted file cannot run a command.
"""

from __future__ import annotations

import copy
import io
import pickle
import sys
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .constants import PCB_3_7_MD5, PCB_3_7_NAME
from .errors import PcbError
from .fileio import atomic_write_bytes, file_md5
from .model import PCB, Bottleneck, ResNet50Trunk, init_upstream

EXPECTED = (
    "a PCB checkpoint (ResNet-50 trunk as `base.*`, `local_conv`, `feat_bn2d`, "
    "`instance0..5`) such as PCB_3_7.pt: a pickled upstream model, a training checkpoint "
    "{'state_dict': ...}, or a plain state_dict"
)


class PickledModule(nn.Module):
    """Stand-in for the upstream `reid` and torchvision classes: holds state, runs nothing."""

    def forward(self, *args: Any) -> Any:
        raise PcbError("a checkpoint stand-in module cannot run; load it into pcb.model.PCB")


_TORCH_LAYERS = {
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.batchnorm": ("BatchNorm1d", "BatchNorm2d"),
    "torch.nn.modules.activation": ("ReLU",),
    "torch.nn.modules.pooling": ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"),
    "torch.nn.modules.linear": ("Linear",),
    "torch.nn.modules.dropout": ("Dropout",),
    "torch.nn.modules.container": ("Sequential",),
}
_UPSTREAM_CLASSES = {
    ("reid.models.resnet", "ResNet"),
    ("torchvision.models.resnet", "ResNet"),
    ("torchvision.models.resnet", "Bottleneck"),
    ("torchvision.models.resnet", "BasicBlock"),
}
_ALLOWED_FUNCTIONS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): nn.Parameter,
    ("torch", "Size"): torch.Size,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; its str() is `module.name`."""


def _allowed_global(module: str, name: str) -> Any:
    # Protocol-2 pickles name Python 3's builtins module by its Python 2 name.
    module = "builtins" if module == "__builtin__" else module
    if (module, name) in _ALLOWED_FUNCTIONS:
        return _ALLOWED_FUNCTIONS[(module, name)]
    if (module, name) in _UPSTREAM_CLASSES:
        return PickledModule
    if name in _TORCH_LAYERS.get(module, ()):
        return getattr(nn, name)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    raise RefusedGlobal(f"{module}.{name}")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _allowed_global(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load takes a module-like object and uses its Unpickler and load.
restricted_pickle = types.SimpleNamespace(
    __name__="pcb_restricted_pickle", Unpickler=_RestrictedUnpickler, load=_restricted_load
)


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: PCB
    format: str  # "pickled-model", "training-checkpoint" or "state-dict"
    md5: str


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _read_pickle(path: Path) -> Any:
    try:
        return torch.load(
            path, map_location="cpu", pickle_module=restricted_pickle, weights_only=False
        )
    except RefusedGlobal as error:
        raise PcbError(
            f"{path}: refused to load class `{error}`, which a PCB checkpoint does not contain; "
            "unpickling it could run code. Use a checkpoint saved by PCB_RPP_for_reID or "
            "re-save only its state_dict."
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
    ) as error:
        raise PcbError(
            f"{path}: cannot read it as a PyTorch checkpoint, it may be truncated or not a "
            f"checkpoint ({type(error).__name__}: {_first_line(error)}). "
            f"Expected {EXPECTED}; download it again if it was cut short."
        ) from None


def _extract_state_dict(path: Path, payload: Any) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(payload, nn.Module):
        return payload.state_dict(), "pickled-model"
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        return payload["state_dict"], "training-checkpoint"
    if (
        isinstance(payload, dict)
        and payload
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items())
    ):
        return payload, "state-dict"
    raise PcbError(f"{path}: holds a {type(payload).__name__}, not a model; expected {EXPECTED}")


def _strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _build_model(path: Path, state: dict[str, torch.Tensor]) -> PCB:
    classifier = state.get("instance0.weight")
    num_classes = int(classifier.shape[0]) if classifier is not None else PCB().num_classes
    model = PCB(num_classes=num_classes)
    expected = model.state_dict()
    # Checkpoints from torch < 0.4.1 have no BatchNorm step counters; nothing reads them.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"missing {len(missing)} keys: {_summarise(missing)}")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} keys: {_summarise(unexpected)}")
        raise PcbError(f"{path}: not a PCB checkpoint, {'; '.join(details)}. Expected {EXPECTED}")
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong_shape:
        raise PcbError(
            f"{path}: tensor shapes do not match PCB's: {_summarise(wrong_shape, 4)}. "
            f"Expected {EXPECTED}"
        )
    model.load_state_dict(state, strict=False)
    return model.eval()


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read any supported checkpoint into an eval-mode PCB model."""
    path = Path(path)
    if not path.is_file():
        raise PcbError(
            f"checkpoint {path} not found; put PCB_3_7.pt there (see data/README.md) "
            "or run `invoke demo-data` for an untrained demo checkpoint"
        )
    md5 = file_md5(path)
    if path.name == PCB_3_7_NAME and md5 != PCB_3_7_MD5:
        warnings.warn(
            f"{path}: md5 {md5} differs from the published {PCB_3_7_MD5}; the download may be "
            "corrupt or a different file. Continuing.",
            stacklevel=2,
        )
    state, form = _extract_state_dict(path, _read_pickle(path))
    model = _build_model(path, _strip_data_parallel(dict(state)))
    return LoadedCheckpoint(model=model, format=form, md5=md5)


# --- writing the upstream pickled format (demo data and tests) -------------------------

_UPSTREAM_MODULES = (
    "reid",
    "reid.models",
    "reid.models.resnet",
    "torchvision",
    "torchvision.models",
    "torchvision.models.resnet",
)


@contextmanager
def _upstream_classes() -> Iterator[dict[tuple[str, str], type]]:
    """Make `reid.models.resnet.ResNet` and torchvision's classes importable for pickling.

    pickle records a class by module and name and checks that the name resolves to it, so
    the stand-in modules live in sys.modules only while the file is written.
    """
    saved = {name: sys.modules.get(name) for name in _UPSTREAM_MODULES}
    classes: dict[tuple[str, str], type] = {}
    try:
        for name in _UPSTREAM_MODULES:
            sys.modules[name] = types.ModuleType(name)
        for module_name, class_name in sorted(_UPSTREAM_CLASSES):
            cls = type(class_name, (nn.Module,), {"__module__": module_name})
            setattr(sys.modules[module_name], class_name, cls)
            classes[(module_name, class_name)] = cls
        yield classes
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def upstream_pickle_bytes(model: PCB) -> bytes:
    """`model` pickled as PCB_RPP_for_reID saves it: a whole `reid.models.resnet.ResNet`."""
    upstream = copy.deepcopy(model).eval()
    with _upstream_classes() as classes:
        for module in upstream.modules():
            if isinstance(module, Bottleneck):
                module.__class__ = classes[("torchvision.models.resnet", "Bottleneck")]
            elif isinstance(module, ResNet50Trunk):
                module.__class__ = classes[("torchvision.models.resnet", "ResNet")]
        upstream.__class__ = classes[("reid.models.resnet", "ResNet")]
        # The hyper-parameters upstream keeps on the instance (FCN mode, 256 local features).
        upstream.depth = 50
        upstream.pretrained = True
        upstream.cut_at_pooling = False
        upstream.FCN = True
        upstream.num_features = 256
        upstream.dropout = 0.5
        buffer = io.BytesIO()
        torch.save(upstream, buffer)
    return buffer.getvalue()


def write_demo_checkpoint(path: Path, seed: int = 0) -> Path:
    """A randomly initialised PCB in the upstream pickled format (untrained: demo only)."""
    generator = torch.Generator().manual_seed(seed)
    model = init_upstream(PCB(), generator)
    atomic_write_bytes(Path(path), upstream_pickle_bytes(model))
    return Path(path)
