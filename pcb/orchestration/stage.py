"""A stage call: which `python -m pcb` command, in which image, touching which folders."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

from ..cli.options import Option
from ..errors import PcbError

Arg = Union[str, Path]


@dataclass(frozen=True)
class StageCall:
    """One `python -m pcb <stage> ...` invocation.

    `args` holds the stage's arguments; Path items are host paths, which a container
    executor rewrites to where it mounts them. `image` is the image family that runs it.
    `npu_devices`: Ascend device ids the container gets (/dev/davinci<N> and the driver);
    `gpus`: NVIDIA GPUs it gets, a count (-1 = all) or device ids; neither by default.
    """

    stage: str
    image: str
    args: tuple[Arg, ...] = ()
    writes_data: bool = False  # demo-data writes into data/; every other stage reads it only
    needs_network: bool = False
    env: dict[str, str] = field(default_factory=dict)
    npu_devices: tuple[int, ...] = ()
    gpus: int | tuple[str, ...] | None = None

    def argv(self) -> list[str]:
        return [self.stage, *(str(a) for a in self.args)]

    def run_dir(self) -> Path | None:
        """The run folder the stage writes (its `--run` argument), if it has one."""
        for flag, value in zip(self.args, self.args[1:]):
            if flag == "--run" and isinstance(value, Path):
                return value
        return None


def join_ints(values: Sequence[int]) -> str:
    """(1, 4, 8) -> "1,4,8": how every list-valued option is written."""
    return ",".join(str(v) for v in values)


def option_value(option: Option, value: Any) -> Arg:
    """A task's value of a stage option as the stage's argument: checked with the stage's own
    type first (a bad one stops here, before any image is built or container started); paths
    stay Paths, for the executor to map into the container."""
    if option.type is Path:
        return Path(value)
    text = join_ints(value) if isinstance(value, (list, tuple)) else str(value)
    try:
        if option.type is not None:
            option.type(text)
        if option.choices and text not in option.choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(option.choices)}")
    except (argparse.ArgumentTypeError, ValueError) as error:
        raise PcbError(f"{option.flag} {text!r}: {error}") from None
    return text


def with_options(call: StageCall, values: Mapping[Option, Any]) -> StageCall:
    """The call with these options of its stage given: a value replaces the one the call has
    for that flag, or is added at the end; a switch is added when true."""
    args = list(call.args)
    for option, value in values.items():
        if option.is_switch:
            if value and option.flag not in args:
                args.append(option.flag)
            continue
        if value is None:
            continue
        arg = option_value(option, value)
        flags = [i for i, a in enumerate(args) if a == option.flag and i + 1 < len(args)]
        if flags:
            args[flags[0] + 1] = arg
        else:
            args += [option.flag, arg]
    return replace(call, args=tuple(args))
