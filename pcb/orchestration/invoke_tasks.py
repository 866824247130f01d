"""Invoke tasks made from option tables: a task's arguments are its TaskOptions (Invoke reads a
task's arguments from its body's signature, which `make_task` writes), its body sorts what was
given (task_options.sort_options), builds the Settings and calls one function, and a PcbError
becomes Invoke's Exit with the message and status 1.

Every task takes long options only (no automatic short flags), so that `-h` is help
everywhere and a flag's spelling never depends on the other options of its task.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any, Callable

from invoke import Exit, Task

from ..cli.options import stage_help
from ..errors import PcbError
from . import commands
from .settings import Settings
from .task_options import (
    DEMO,
    RUNNING,
    STAGE_EXTRAS,
    Given,
    TaskOption,
    sort_options,
    stage_task_options,
    task_settings,
)

Handler = Callable[[Settings, Given], None]


def pcb_errors_exit(body: Callable[..., Any]) -> Callable[..., Any]:
    """A PcbError ends the task with `error: <message>` and exit status 1, no traceback."""

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except PcbError as error:
            raise Exit(f"error: {error}", code=1) from None

    return run


def _signature(options: Sequence[TaskOption]) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("c", kind)]
    for option in options:
        default = False if option.switch else option.default
        params.append(inspect.Parameter(option.name, kind, default=default))
    return inspect.Signature(params)


def make_task(
    name: str, help: str, options: Sequence[TaskOption], handler: Callable[..., None]
) -> Task:
    """A task called `name` (underscores: Invoke shows dashes) whose body hands the context's
    `pcb` settings and the given options to `handler(c, given)`."""
    names = [option.name for option in options]
    if len(set(names)) != len(names):
        raise ValueError(f"task {name}: an option is declared twice: {names}")

    def body(c: Any, **values: Any) -> None:
        handler(c, sort_options(options, values))

    body.__signature__ = _signature(options)  # type: ignore[attr-defined]
    body.__doc__ = help
    body.__name__ = name
    return Task(
        pcb_errors_exit(body),
        name=name,
        help={option.name: option.help for option in options},
        iterable=[option.name for option in options if option.iterable],
        auto_shortflags=False,
    )


def config_of(c: Any) -> dict[str, Any]:
    return dict(c.config.get("pcb", {}))


def settings_task(name: str, help: str, options: Sequence[TaskOption], handler: Handler) -> Task:
    """A task whose handler takes the Settings (invoke.yaml with the given options on top)."""

    def run(c: Any, given: Given) -> None:
        handler(task_settings(config_of(c), given), given)

    return make_task(name, help, options, run)


def stage_task(stage: str, handler: Handler | None = None, more_help: str = "") -> Task:
    """`invoke <stage>`: every option of the stage, --demo where it has a run, the options of
    STAGE_EXTRAS, --local, --print-docker and --dry-run; by default the stage's one call."""
    options = stage_task_options(stage)
    demo = (DEMO,) if any(o.setting == "run" for o in options) else ()
    options = (*options, *STAGE_EXTRAS.get(stage, ()), *demo, *RUNNING)

    def run_stage(settings: Settings, given: Given) -> None:
        commands.run_stage(settings, stage, given.stage, **given.running())

    help = stage_help(stage) + (f" {more_help}" if more_help else "")
    return settings_task(stage.replace("-", "_"), help, options, handler or run_stage)
