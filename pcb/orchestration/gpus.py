"""Which NVIDIA GPUs the TensorRT containers get, and which CUDA device the stages then use.

GPU selection (`gpus` in invoke.yaml, `--gpus`): "all" (default), or device ids / UUIDs "0",
"0,2", "GPU-3f2a...". In a container the chosen GPUs are the only ones it sees, numbered from 0,
so the stages run on CUDA device 0 (the first chosen); on the host (--local) they run on the
first id given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from ..errors import PcbError
from .spec import GpuSelection, gpu_request

GpusValue = Union[str, int, Sequence[Union[str, int]], None]


def parse_gpus(value: GpusValue) -> GpuSelection:
    """ "all" (or None, "") -> -1 (every GPU); "0,2" / 1 / ["0", "GPU-..."] -> those ids.

    A bare number is a device id, not a count: `--gpus 1` means GPU 1, as one says it.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return -1
    if isinstance(value, bool):
        raise PcbError(f"gpus = {value!r}: give all, or device ids such as 0 or 0,1")
    if isinstance(value, int):
        if value == -1:
            return -1
        if value < 0:
            raise PcbError(f"gpus = {value}: give all, or non-negative device ids such as 0,1")
        return (str(value),)
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    ids = tuple(part.strip() for part in parts if str(part).strip())
    if not ids:
        raise PcbError("gpus is empty: give all, or device ids such as 0 or 0,1")
    if any(i.lower() == "none" for i in ids):
        raise PcbError("gpus = none: the TensorRT stages need a GPU; give all or device ids")
    bad = [i for i in ids if not (i.isdigit() or i.startswith(("GPU-", "MIG-")))]
    if bad:
        raise PcbError(
            f"gpus: {', '.join(bad)} is neither a device index nor a GPU-/MIG- UUID "
            "(`nvidia-smi -L` lists both)"
        )
    return ids


def cuda_device(gpus: GpuSelection, executor: str) -> int:
    """The CUDA device a stage uses: 0 in a container (it sees only the chosen GPUs); on the
    host the first chosen index (a UUID cannot be an index there: 0, with CUDA_VISIBLE_DEVICES
    left to the user)."""
    if executor == "docker" or gpus is None or isinstance(gpus, int):
        return 0
    first = gpus[0]
    return int(first) if first.isdigit() else 0


def gpus_label(gpus: GpuSelection) -> str:
    request = gpu_request(gpus)
    return "none" if request is None else request.to_cli().strip('"')
