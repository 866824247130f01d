"""Writing the upstream pickled format, a whole `reid.models.resnet.ResNet` (demo data, tests)."""

from __future__ import annotations

import copy
import io
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..fileio import atomic_write_bytes
from ..model import PCB, Bottleneck, ResNet50Trunk, init_upstream
from .inert import MODULE_CLASSES

_UPSTREAM_MODULES = (
    "reid",
    "reid.models",
    "reid.models.resnet",
    "torchvision",
    "torchvision.models",
    "torchvision.models.resnet",
)
_UPSTREAM_CLASSES = sorted(
    (module, name)
    for module, name in MODULE_CLASSES
    if module.startswith(("reid.", "torchvision."))
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
        for module_name, class_name in _UPSTREAM_CLASSES:
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
