"""Which device id a tool is given for an NPU, on the host and inside a container.

The CANN runtime numbers the chips a process can see 0 .. count-1: aclrtSetDevice takes
"[0, (available device count - 1)]", and ASCEND_RT_VISIBLE_DEVICES=1,2,3 makes devices 1, 2,
3 the indices 0, 1, 2 (CANN docs, envref_07_0028 and aclpythondevg set_device). A container
given /dev/davinci3 alone sees one chip, so the runtime inside knows it as 0; a runtime told
to use device 4 in a container of two chips fails with "input data rang[0-2)" (seen in
gpustack/gpustack#3352). npu-smi in the same container still shows the host's numbering.

So the orchestration tells a container which host devices it was given, in order
(PCB_NPU_CONTAINER_DEVICES=3,5), and the stages give ais_bench their positions (0, 1) while
their records keep the host ids. Without the variable (on the host), the ids are the host's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ..errors import PcbError

CONTAINER_DEVICES_ENV = "PCB_NPU_CONTAINER_DEVICES"


def container_devices_value(host_ids: Sequence[int]) -> str:
    """The variable's value for a container given these host devices (mounted in this order)."""
    return ",".join(str(i) for i in sorted(set(host_ids)))


def tool_device_ids(
    host_ids: Sequence[int], environ: Mapping[str, str] | None = None
) -> tuple[int, ...]:
    """The ids the CANN runtime of this process knows the host devices `host_ids` by."""
    environ = os.environ if environ is None else environ
    value = environ.get(CONTAINER_DEVICES_ENV, "").strip()
    if not value:
        return tuple(host_ids)
    try:
        mounted = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise PcbError(
            f"{CONTAINER_DEVICES_ENV}={value!r} is not a list of device ids: it is set by pcb's "
            "orchestration; unset it when running by hand"
        ) from None
    missing = [i for i in host_ids if i not in mounted]
    if missing:
        raise PcbError(
            f"NPU device(s) {missing} are not in this container (it was given host devices "
            f"{value}, {CONTAINER_DEVICES_ENV}): run the stage with --devices among those"
        )
    return tuple(mounted.index(i) for i in host_ids)
