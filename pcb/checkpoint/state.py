"""From the unpickled records to named tensors: what torch's `state_dict()` would give, by walking
plain dicts, and the tensors themselves read from their storage bytes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from .inert import ModuleRecord, StorageRef, TensorRef, describe
from .limits import Limits
from .refusal import NotAModel, Refused, Unreadable, clip


def _named(record: ModuleRecord, field: str, where: str) -> dict[str, Any]:
    """One of a module's `_parameters`, `_buffers` or `_modules` dicts, keyed by name."""
    value = record.state.get(field)
    if not isinstance(value, dict):
        raise Unreadable(f"module `{where}` ({record.qualname}) has no {field} dict")
    if not all(isinstance(name, str) for name in value):
        raise Unreadable(f"module `{where}` has a {field} entry whose name is not a string")
    return value


def module_tensors(root: ModuleRecord, limits: Limits) -> dict[str, TensorRef]:
    """The module tree's parameters and persistent buffers under their dotted names.

    Each module is visited once (a shared or self-containing module is refused), so the work
    is linear in the file however its modules are wired.
    """
    tensors: dict[str, TensorRef] = {}
    seen: dict[int, str] = {}

    def visit(record: ModuleRecord, prefix: str, path: frozenset[int], depth: int) -> None:
        where = prefix[:-1] or "<root>"
        if depth > limits.depth:
            raise Refused(
                f"its modules nest deeper than {limits.depth} levels (PCB's nest 5), "
                f"at `{clip(where, 60)}`"
            )
        seen[id(record)] = where
        skipped = record.state.get("_non_persistent_buffers_set", frozenset())
        if not isinstance(skipped, (set, frozenset)):
            raise Unreadable(f"module `{where}` has a non-persistent buffer list that is not a set")
        for field in ("_parameters", "_buffers"):
            for name, tensor in _named(record, field, where).items():
                if tensor is None or (field == "_buffers" and name in skipped):
                    continue
                if not isinstance(tensor, TensorRef):
                    raise Unreadable(
                        f"`{clip(prefix + name, 80)}` is a {describe(tensor)}, not a tensor"
                    )
                tensors[prefix + name] = tensor
        for name, child in _named(record, "_modules", where).items():
            if child is None:
                continue
            if not isinstance(child, ModuleRecord):
                raise Unreadable(
                    f"`{clip(prefix + name, 80)}` is a {describe(child)}, not a module"
                )
            if id(child) in path:
                raise Refused(f"module `{clip(prefix + name, 80)}` contains itself")
            if id(child) in seen:
                raise Refused(
                    f"module `{clip(prefix + name, 80)}` is the same module as "
                    f"`{clip(seen[id(child)], 80)}`; a PCB checkpoint shares no modules"
                )
            visit(child, f"{prefix}{name}.", path | {id(child)}, depth + 1)

    visit(root, "", frozenset({id(root)}), 0)
    return tensors


def _tensor_dict(value: Any) -> dict[str, TensorRef] | None:
    if not (isinstance(value, dict) and value):
        return None
    if all(isinstance(k, str) and isinstance(v, TensorRef) for k, v in value.items()):
        return value
    return None


def extract(payload: Any, limits: Limits) -> tuple[dict[str, TensorRef], str]:
    """The named tensors and which of the three formats held them."""
    if isinstance(payload, ModuleRecord):
        return module_tensors(payload, limits), "pickled-model"
    if isinstance(payload, dict) and "state_dict" in payload:
        state = _tensor_dict(payload["state_dict"])
        if state is None:
            raise Unreadable(
                f"its state_dict is a {describe(payload['state_dict'])} that is not a dict "
                "of named tensors"
            )
        return state, "training-checkpoint"
    state = _tensor_dict(payload)
    if state is not None:
        return state, "state-dict"
    raise NotAModel(f"holds a {describe(payload)}, not a model")


def materialise(
    ref: TensorRef,
    read: Callable[[StorageRef], bytes],
    byteorder: str,
    cache: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The tensor `ref` describes, as a view of its storage's bytes (read once per storage).

    The view shares the immutable bytes read from the file: it is only read from (copied into
    the model), so it is not copied once more into writable memory first.
    """
    storage = ref.storage
    flat = cache.get(storage.key)
    if flat is None:
        raw = read(storage)
        if raw:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The given buffer is not writable")
                flat = torch.frombuffer(raw, dtype=storage.dtype)
        else:
            flat = torch.empty(0, dtype=storage.dtype)
        if byteorder != "little" and storage.dtype.itemsize > 1:
            swapped = flat.view(torch.uint8).view(-1, storage.dtype.itemsize).flip(1)
            flat = swapped.contiguous().view(storage.dtype).view(-1)
        cache[storage.key] = flat
    return torch.as_strided(flat, ref.size, ref.stride, storage.offset + ref.offset)
