"""What each Invoke task does, as plain functions of the settings: tasks.py turns a task's
options into Settings and calls one of these. Each decides the stage calls (argv.py,
pipeline.py) and hands them to `run_calls`, the one sequence every task follows: a dry run
prints the plan, --print-docker the `docker run` lines; otherwise the host is checked for every
NPU and GPU stage at once, the images are built when the task builds, and the calls run in
order on the settings' executor."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..cli.options import BY_NAME, FORCEABLE
from ..errors import PcbError
from . import builds
from .argv import NPU_BACKEND, report_call, stage_call
from .dry_run import describe_plan
from .executors import Executor, runs_here
from .inputs_check import check_inputs
from .pipeline import full_pipeline, import_pipeline, trt_pipeline
from .preflight import check_hosts, resolve_auto_chip
from .routing import executor_for
from .settings import Settings
from .stage import StageCall, with_options


def forced(calls: Sequence[StageCall]) -> list[StageCall]:
    """The calls with --force added where it means "run again even when current" (the
    report's --force means "compare anyway")."""
    force = BY_NAME["force"]
    return [with_options(c, {force: True}) if c.stage in FORCEABLE else c for c in calls]


def run_calls(
    settings: Settings,
    calls: Sequence[StageCall],
    *,
    print_docker: bool = False,
    dry_run: bool = False,
    build: bool = False,
    executor: Executor | None = None,
    host_root: Path = Path("/"),
    check_first: Callable[[], None] | None = None,
) -> None:
    """Print the plan (`dry_run`) or the `docker run` lines (`print_docker`); else check the
    host for every NPU and GPU stage before anything starts, build the images the calls need
    (`build`, with the docker executor), and run the calls in order: the first failure stops
    the rest. `check_first` runs after the host checks, before the builds."""
    if dry_run:
        print("\n".join(describe_plan(calls, settings, host_root, executor)))
        return
    if print_docker:
        # Containers even with `executor: local`, each on the engine its image is set to.
        from . import routing

        docker = routing.executor_for(replace(settings, executor="docker"), host_root)
        for call in calls:
            print(docker.preview(call).command)
        return
    executor = executor or executor_for(settings, host_root)
    # This host is checked for the calls it runs; a remote engine's stage checks its own host.
    here = [c for c in calls if runs_here(executor, c)]
    check_hosts(here, executor.name, host_root)
    if check_first is not None:  # the task's own pre-flight (invoke full: inputs_check.py)
        check_first()
    if build and executor.name == "docker":
        built = builds.build(settings, sorted({call.image for call in calls}))
        # The containers run the content tags this build made, not the shared :latest.
        if hasattr(executor, "images"):
            executor.images.update({result.name: result.tag for result in built or ()})
    # A remote engine's host is checked for its NPU / GPU stages before anything runs too.
    router = getattr(executor, "executor", None)
    for remote in getattr(executor, "remote", {}).values():
        if router is not None and hasattr(remote, "preflight"):
            remote.preflight([c for c in calls if router(c) is remote])
    run_plan(calls, executor)


def run_plan(calls: Sequence[StageCall], executor: Executor) -> None:
    """The calls in order; or, when the chains after the shared head are on different engines,
    the head, then the chains at the same time (parallel.py), then the tail."""
    from . import parallel
    from .pipeline import split_plan

    plan = split_plan(calls)
    groups = parallel.group_chains(plan, executor)
    if len(groups) < 2:
        if len(plan.chains) > 1 and hasattr(executor, "remote"):
            print(
                f"note: chains {', '.join(c.name for c in plan.chains)} run one after the other "
                "on one engine: its CPU / NPU / GPU is shared, so chains in parallel there "
                "would only contend",
                flush=True,
            )
        for call in calls:
            executor.run(call)
        return
    for call in plan.head:
        executor.run(call)
    for remote in getattr(executor, "remote", {}).values():
        remote.parallel = True
    print(
        "==> in parallel: "
        + "; ".join(f"[{g.label}] {', '.join(c.stage for c in g.calls)}" for g in groups),
        flush=True,
    )
    try:
        outcome = parallel.run_groups(groups, executor, lambda: stop_owned(executor))
    finally:
        for remote in getattr(executor, "remote", {}).values():
            remote.parallel = False
    for line in parallel.timing_lines(outcome):
        print(line, flush=True)
    if outcome.errors:
        raise PcbError(parallel.failure_message(outcome))
    for call in plan.tail:
        executor.run(call)


def stop_owned(executor: Executor) -> None:
    """Kill every container this process runs, on this host's engine and each remote one of
    the executor (a failed chain stops the others: their stages then fail and clean up)."""
    from .lifecycle import labelled_containers
    from .owner import LABEL_PID

    clients = []
    default = getattr(executor, "default", executor)
    if getattr(default, "name", "") == "docker":
        clients.append(default.client)
    clients += [remote.client() for remote in getattr(executor, "remote", {}).values()]
    label = f"{LABEL_PID}={os.getpid()}"
    for client in clients:
        try:
            running = labelled_containers(client, label, all=False)
        except Exception as error:  # the engine went away: clean finds them later
            print(f"warning: could not list the containers to stop: {error}", file=sys.stderr)
            continue
        for container in running:
            try:
                container.kill()
            except Exception as error:  # ended meanwhile; one refusal must not spare the rest
                print(f"warning: could not stop {container.name}: {error}", file=sys.stderr)


def needs_chip(stage: str, settings: Settings) -> bool:
    """Whether the stage's call names the chip, so that `--chip auto` must be read first."""
    if stage in ("convert", "parity", "full"):
        return bool(settings.chip)
    return stage in ("infer", "perf") and settings.backend == NPU_BACKEND


def ready(settings: Settings, task: str) -> Settings:
    """The settings with `--chip auto` read from npu-smi where the task's calls need it."""
    return resolve_auto_chip(settings) if needs_chip(task, settings) else settings


def run_stage(
    settings: Settings,
    stage: str,
    given: Mapping[str, Any] | None = None,
    *,
    print_docker: bool = False,
    dry_run: bool = False,
) -> None:
    """`invoke <stage>`: the stage's one call, with the options given that have no setting."""
    settings = ready(settings, stage)
    call = stage_call(stage, settings, given)
    run_calls(settings, [call], print_docker=print_docker, dry_run=dry_run)


def run_full(
    settings: Settings, *, force: bool = False, print_docker: bool = False, dry_run: bool = False
) -> None:
    """`invoke full`: every stage in order, the images the pipeline needs built first."""
    settings = ready(settings, "full")
    calls = full_pipeline(settings)
    if force:
        calls = forced(calls)
    # Before the images build: a missing checkpoint or a full disk shows in a second.
    run_calls(
        settings,
        calls,
        print_docker=print_docker,
        dry_run=dry_run,
        build=True,
        check_first=lambda: check_inputs(settings),
    )


def run_trt(
    settings: Settings,
    *,
    accuracy: bool = True,
    print_docker: bool = False,
    dry_run: bool = False,
) -> None:
    """`invoke trt`: the TensorRT stages of a run and the report, the images built first."""
    calls = trt_pipeline(settings, accuracy)
    run_calls(settings, calls, print_docker=print_docker, dry_run=dry_run, build=True)


def run_import(
    settings: Settings,
    source: str | None,
    *,
    batch_size: str | None = None,
    chips_per_card: str | None = None,
    evaluate: bool = True,
    print_docker: bool = False,
    dry_run: bool = False,
) -> None:
    """`invoke import-results`: import, then evaluate, parity and report (unless not
    `evaluate`)."""
    if not source:
        raise PcbError(
            "import-results needs the benchmark tool's result/ folder: add --from "
            "data/<folder>/result (under data/ or results/, which the container sees)"
        )
    calls = import_pipeline(
        settings,
        Path(source),
        None if batch_size is None else int(batch_size),
        None if chips_per_card is None else int(chips_per_card),
        evaluate,
    )
    run_calls(settings, calls, print_docker=print_docker, dry_run=dry_run)


def run_report(
    settings: Settings,
    runs: Sequence[str] = (),
    given: Mapping[str, Any] | None = None,
    *,
    print_docker: bool = False,
    dry_run: bool = False,
) -> None:
    """`invoke report`: one run, or several (`runs`: names under results/ or folders)."""
    call = with_options(report_call(settings, runs), _report_options(given or {}))
    run_calls(settings, [call], print_docker=print_docker, dry_run=dry_run)


def _report_options(given: Mapping[str, Any]) -> dict:
    from ..cli.options import stage_option

    return {stage_option("report", key): value for key, value in given.items()}


def build_images(
    settings: Settings,
    images: Sequence[str] = (),
    *,
    force: bool = False,
    build_args: Sequence[str] = (),
    check: bool = False,
) -> None:
    """`invoke build`: build the images (default: export and runtime), or with `check` print
    each base's registry digest and build nothing."""
    names = list(images) or list(builds.DEFAULT_IMAGES)
    if check:
        if not builds.check_bases(settings, names):
            raise PcbError("a base's digest could not be had from its registry (see above)")
        return
    builds.build(settings, names, force, build_args)


def clean(settings: Settings, *, dry_run: bool = False, containers_only: bool = False) -> None:
    """`invoke clean`: leftover pcb containers and stale pcb images of this checkout; on each
    remote engine of `settings.engines` (--engine), its containers and run volumes too."""
    from .engine import connect
    from .images import PROJECT_ROOT
    from .lifecycle import clean as clean_engine

    # A base named in invoke.yaml counts too when telling current image tags from stale.
    bases = () if settings.base_image in ("auto", "offline") else (settings.base_image,)
    report = clean_engine(
        connect(), PROJECT_ROOT, dry_run=dry_run, images=not containers_only, bases=bases
    )
    print("\n".join(report.lines()))
    # Each remote engine of the settings (--engine): its leftover containers and run volumes.
    from .endpoints import Endpoint, client_for
    from .remote_executor import clean_engine as clean_remote

    for endpoint in sorted({endpoint for _, endpoint in settings.engines}):
        client = client_for(Endpoint(endpoint), "clean")
        print("\n".join(clean_remote(client, endpoint, dry_run=dry_run)))


def base_image(force: bool = False) -> None:
    """`invoke base-image`: the Debian base made with debootstrap; prints its tag."""
    from .base_image import ensure_base_image

    print(ensure_base_image(force=force).tag)


def locks(
    images: Sequence[str] = (), find_links: Sequence[str] = (), root: Path | None = None
) -> None:
    """`invoke locks`: regenerate docker/<image>/requirements*.lock (and the build tools'
    lock) with uv, hashes included (docker/README.md, "Regenerating the locks"); needs the
    package index."""
    import shutil
    import sys

    from .images import IMAGES, PROJECT_ROOT, image_def, regenerate_locks

    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).is_file():
        raise PcbError("uv is not installed: `pip install -e '.[dev]'` (or `pip install uv`)")
    names = list(images) or ["build-tools", *IMAGES]
    for name in names:
        if name != "build-tools":
            image_def(name)  # an unknown name is refused, with the nearest ones
    regenerate_locks(names, find_links, uv, root or PROJECT_ROOT)
