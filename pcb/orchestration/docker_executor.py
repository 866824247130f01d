"""Run a stage call in its container through the Docker SDK.

Pre-flight checks come first, each a PcbError that says how to fix it, and all before any
container starts: the engine answers, the image is built, the Ascend host files or the NVIDIA
runtime are there when the stage asks for NPUs or GPUs. Then containers of this checkout whose
owner has died are removed (lifecycle.remove_orphans), the folders the container writes are
made writable for its uid (a root caller's containers run as another: users.py), and the
container runs with its logs streamed to the terminal. It is removed afterwards whatever
happens: failure, an exception, or SIGINT / SIGTERM / SIGHUP, which stop it first and end the
process with status 128 + the signal's number. A non-zero exit status becomes a PcbError
naming the stage and the status; an out-of-memory kill one naming the memory limit.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from ..errors import PcbError
from ..progress import live
from . import limits
from .engine import connect
from .executors import Executor, LocalExecutor, Preview
from .images import PROJECT_ROOT, image_def, sources_digest
from .lifecycle import SignalGuard, Signalled, StageSignalled, remove_orphans
from .owner import owner_labels
from .settings import Settings
from .spec import (
    IMAGE_ID_ENV,
    ContainerSpec,
    Roots,
    build_spec,
    npu_host,
    npu_missing_message,
)
from .stage import StageCall
from .users import hand_over

# ---- pre-flight ------------------------------------------------------------------------------


def check_image(client: Any, reference: str, family: str) -> Any:
    """The image is here (else: how to build it); warn when it was built from other sources."""
    from docker.errors import ImageNotFound

    try:
        image = client.images.get(reference)
    except ImageNotFound:
        raise PcbError(
            f"image {reference} is not on this machine: build it with "
            f"`invoke build --image {family}` (offline: `invoke base-image` first, then "
            f"`invoke build --image {family} --base-image <the tag it prints>`)"
        ) from None
    built_from = (image.labels or {}).get("pcb.sources.sha256")
    try:
        current = sources_digest()
    except PcbError:  # pcb installed without its project files: nothing to compare
        current = built_from
    if built_from and built_from != current:
        print(
            f"warning: {reference} was built from other pcb sources than these; rebuild it "
            f"with `invoke build --image {family}` to run the current code",
            file=sys.stderr,
        )
    return image


def gpu_runtime_available(client: Any) -> bool:
    """The NVIDIA container toolkit: an `nvidia` runtime registered with the engine, or its
    hook / CLI on the PATH (which `--gpus` uses)."""
    try:
        runtimes = client.info().get("Runtimes") or {}
    except Exception:  # an old engine without the field
        runtimes = {}
    if "nvidia" in runtimes:
        return True
    return any(
        shutil.which(tool) for tool in ("nvidia-container-runtime-hook", "nvidia-container-cli")
    )


def preflight(
    call: StageCall,
    client: Any,
    image: str,
    host_root: Path = Path("/"),
) -> None:
    """Every check that can fail before a container starts; the first failure raises."""
    check_image(client, image, call.image)
    if call.npu_devices:
        npu = npu_host(call.npu_devices, host_root)
        if npu.missing:
            raise PcbError(npu_missing_message(npu.missing, call.npu_devices))
    if call.gpus is not None and not gpu_runtime_available(client):
        raise PcbError(
            f"stage {call.stage} asks for GPUs, but the Docker engine has no NVIDIA runtime: "
            "install the NVIDIA driver and the NVIDIA Container Toolkit, then "
            "`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart "
            "docker` (`docker run --rm --gpus all ubuntu nvidia-smi` should then work)"
        )


# ---- running ---------------------------------------------------------------------------------


# After SIGINT / SIGTERM / SIGHUP, how long the stage has to end on its own before it is
# killed: a Python stage ends at once (its outputs are written whole or not at all).
STOP_GRACE_S = 5


@dataclass
class _Started:
    """The container being run, once the engine has made it (a signal may come first)."""

    name: str
    container: Any = None


def run_spec(spec: ContainerSpec, client: Any, output: IO[bytes] | None = None) -> int:
    """Create and start the container, stream its output, wait; return its exit status.

    The container is labelled with this process as its owner (owner.py) and removed afterwards
    in every case: success, failure, an exception while streaming (re-raised once it is
    gone, a KeyboardInterrupt included). SIGINT, SIGTERM and SIGHUP while it runs
    are passed on to it; after STOP_GRACE_S it is killed, then removed, and StageSignalled
    (a SystemExit with status 128 + the signal's number) is raised with a one-line message.
    An out-of-memory kill raises PcbError naming the stage and the limit.
    """
    out = output if output is not None else _stdout_bytes()
    kwargs = spec.create_kwargs()
    kwargs["labels"] = {**kwargs["labels"], **owner_labels()}
    started = _Started(f"pcb-{spec.stage or 'stage'}-{uuid.uuid4().hex[:12]}")
    status, oom = 1, False
    with SignalGuard() as guard:
        # A guard raises Signalled at most once, then only records: the cleanup below cannot be
        # interrupted, and the outer `except` catches a signal that lands as it begins.
        try:
            try:
                started.container = client.containers.create(name=started.name, **kwargs)
                started.container.start()
                for chunk in started.container.logs(stream=True, follow=True):
                    out.write(chunk)
                    out.flush()
                status = int(started.container.wait().get("StatusCode", 1))
                oom = _oom_killed(started.container)
                guard.armed = False
            except Signalled:
                pass
            finally:
                guard.armed = False
                _finish(client, started, guard.signo)
        except Signalled:
            _finish(client, started, guard.signo)
    if guard.signo is not None:
        stopped = StageSignalled(spec.stage, guard.signo)
        print(f"pcb: {stopped.message}", file=sys.stderr, flush=True)
        raise stopped
    if oom:
        raise PcbError(_oom_message(spec, status))
    return status


def _finish(client: Any, started: _Started, signo: int | None) -> None:
    """Pass a signal on (then wait up to STOP_GRACE_S), and remove the container."""
    container = started.container or _find(client, started.name)
    if container is None:
        return
    if signo is not None:
        try:
            container.kill(signal=signo)
            container.wait(timeout=STOP_GRACE_S)
        except Exception:  # it had ended, or took too long: removal kills it in any case
            pass
    _remove(container)


def _find(client: Any, name: str) -> Any:
    """The container of that name, if the engine made it before a signal cut the call short."""
    try:
        return client.containers.get(name)
    except Exception:
        return None


def _oom_killed(container: Any) -> bool:
    try:
        container.reload()
        return bool(container.attrs.get("State", {}).get("OOMKilled"))
    except Exception:  # a fake client in tests, or an engine that does not say
        return False


def _oom_message(spec: ContainerSpec, status: int) -> str:
    limit = spec.memory_limit
    held = (
        f"its container's memory limit of {limits.human_size(limit)} ({limits.docker_size(limit)})"
        if limit
        else "the memory the host could give it"
    )
    return (
        f"stage {spec.stage or '?'} ran out of memory and was killed (exit status {status}): it "
        f"needed more than {held}. Raise the limit with `memory_limit` under `pcb:` in "
        "invoke.yaml (e.g. `memory_limit: 32g`, or 0 for no limit; the default `auto` is the "
        "host's memory less a tenth), or make the stage smaller (a lower --batch-size, fewer "
        "--workers)."
    )


def _image(client: Any, reference: str) -> Any:
    try:
        return client.images.get(reference)
    except Exception:  # a fake client in tests, or an engine hiccup: the id is optional
        return None


def _stdout_bytes() -> IO[bytes]:
    return getattr(sys.stdout, "buffer", sys.stdout)


def _remove(container: Any) -> None:
    from docker.errors import APIError, NotFound

    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as error:
        if "already in progress" not in str(error):
            print(
                f"warning: could not remove container {container.id[:12]}: {error}", file=sys.stderr
            )


def container_spec(
    call: StageCall,
    *,
    data_dir: Path | str = "data",
    results_dir: Path | str = "results",
    image: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
    host_root: Path = Path("/"),
    require_npu: bool = True,
    memory_limit: object = limits.AUTO,
) -> ContainerSpec:
    """The spec of a call; `image` defaults to pcb-<call.image>:latest."""
    reference = image or image_def(call.image).latest
    return build_spec(
        call,
        reference,
        Roots.of(data_dir, results_dir),
        uid=uid,
        gid=gid,
        host_root=host_root,
        require_npu=require_npu,
        memory_limit=memory_limit,
    )


def docker_run_command(call: StageCall, **kwargs: Any) -> str:
    """The `docker run ...` line of a call (for --print-docker); needs no engine, and does not
    check the Ascend host files (it prints what it would map)."""
    kwargs.setdefault("require_npu", False)
    return container_spec(call, **kwargs).to_docker_run()


def run_in_container(
    call: StageCall,
    *,
    data_dir: Path | str = "data",
    results_dir: Path | str = "results",
    image: str | None = None,
    client: Any = None,
    output: IO[bytes] | None = None,
    host_root: Path = Path("/"),
    uid: int | None = None,
    gid: int | None = None,
    memory_limit: object = limits.AUTO,
) -> ContainerSpec:
    """Run one stage in its container; PcbError on a failed check or a non-zero exit status.

    Orphaned containers of this checkout are removed first. data/ and results/ are created
    on the host if missing, so that the engine does not create them as root, and made
    writable for the container's uid (prepare_folders). Returns the spec that ran.
    """
    client = client or connect()
    spec = container_spec(
        call,
        data_dir=data_dir,
        results_dir=results_dir,
        image=image,
        uid=uid,
        gid=gid,
        host_root=host_root,
        memory_limit=memory_limit,
    )
    preflight(call, client, spec.image, host_root)
    # An orphan of an earlier, killed run may hold this run folder's lock: removing it frees it.
    remove_orphans(client, PROJECT_ROOT)
    image_id = getattr(_image(client, spec.image), "id", None)
    if isinstance(image_id, str):
        # The image's content id, for the run manifest: a tag like :latest moves.
        spec = replace(spec, environment={**spec.environment, IMAGE_ID_ENV: image_id})
    if output is None and live(sys.stdout):
        spec = with_terminal(spec)
    prepare_folders(call, spec)
    status = run_spec(spec, client, output)
    if status != 0:
        raise PcbError(
            f"stage {call.stage} failed in its container ({spec.image}) with exit status "
            f"{status}; run it by hand with:\n  {spec.to_docker_run()}"
        )
    return spec


def with_terminal(spec: ContainerSpec) -> ContainerSpec:
    """The spec with a TTY of the caller's width: the caller sees live progress bars, which
    a container without a terminal holds back until a newline (pcb/progress.py)."""
    columns = str(shutil.get_terminal_size().columns)
    return replace(spec, tty=True, environment={**spec.environment, "COLUMNS": columns})


def prepare_folders(call: StageCall, spec: ContainerSpec) -> None:
    """Create the data and results folders the container mounts, and, for a root caller, hand
    what root owns in the folders it writes (results/, and demo-data's output folder under
    data/) to the container's uid:gid (users.hand_over)."""
    data, results = spec.mounts[0], spec.mounts[1]
    for mount in (data, results):
        Path(mount.source).mkdir(parents=True, exist_ok=True)
    writable = [Path(results.source)]
    if call.writes_data:
        for arg in call.args:
            path = Path(os.path.realpath(os.path.abspath(arg))) if isinstance(arg, Path) else None
            if path is not None and Path(data.source) in path.parents:
                writable.append(path)
    uid, gid = (int(part) for part in (spec.user or "0:0").split(":"))
    hand_over(writable, uid, gid)


class DockerExecutor:
    """Each stage in its container on the Docker engine (connected when the first one runs)."""

    name = "docker"

    def __init__(
        self,
        data_dir: Path | str = "data",
        results_dir: Path | str = "results",
        memory_limit: object = limits.AUTO,
        host_root: Path = Path("/"),
        client: Any = None,
        bases: tuple[str, ...] = (),
    ) -> None:
        self.data_dir, self.results_dir = data_dir, results_dir
        self.memory_limit, self.host_root = memory_limit, host_root
        self._client = client
        self.bases = bases  # bases besides each image's default (checkout_images.py)
        # image family -> the content tag to run; filled by a build (run_calls) or looked up
        self.images: dict[str, str] = {}
        self._noted: set[str] = set()  # images whose preview fell back to :latest, said once

    @classmethod
    def for_settings(cls, settings: Settings, host_root: Path = Path("/")) -> DockerExecutor:
        from .checkout_images import settings_bases

        return cls(
            settings.data_dir,
            settings.results_dir,
            settings.memory_limit,
            host_root,
            bases=settings_bases(settings),
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect()
        return self._client

    def image_for(self, call: StageCall, required: bool = True) -> str:
        """The content tag of the call's image that this checkout built. Not `required` (a
        preview): pcb-<name>:latest when the engine does not answer or nothing is built yet."""
        from .checkout_images import checkout_image, not_built_message

        if call.image not in self.images:
            try:
                found = checkout_image(self.client, call.image, self.bases)
            except PcbError:
                if required:
                    raise
                found = None
            if found is None:
                if required:
                    raise PcbError(not_built_message(call.image))
                latest = image_def(call.image).latest
                if call.image not in self._noted:
                    self._noted.add(call.image)
                    print(
                        f"note: pcb-{call.image} is not built from this checkout's sources yet, "
                        f"so {latest} is shown; after `invoke build --image {call.image}` the "
                        "lines show the content tag the stage would run",
                        file=sys.stderr,
                    )
                return latest
            self.images[call.image] = found
        return self.images[call.image]

    def preview(self, call: StageCall) -> Preview:
        """Its `docker run` line with the image this checkout built; the Ascend host files
        are not required (a dry run shows what it would map)."""
        spec = container_spec(
            call,
            image=self.image_for(call, required=False),
            data_dir=self.data_dir,
            results_dir=self.results_dir,
            host_root=self.host_root,
            require_npu=False,
            memory_limit=self.memory_limit,
        )
        return Preview(f"pcb-{call.image}", spec.to_docker_run(), spec.command, spec.environment)

    def run(self, call: StageCall) -> None:
        image = self.image_for(call)
        print(f"==> {call.stage} [{image}]: {' '.join(call.argv())}", flush=True)
        run_in_container(
            call,
            image=image,
            data_dir=self.data_dir,
            results_dir=self.results_dir,
            client=self.client,
            host_root=self.host_root,
            memory_limit=self.memory_limit,
        )


def executor_for(settings: Settings, host_root: Path = Path("/")) -> Executor:
    """The settings' executor on this host: docker (each stage in its container) or local.
    `host_root`: where the Ascend host files are looked for (a test's fake host). With other
    engines set, routing.executor_for is the one to call."""
    if settings.executor == "local":
        return LocalExecutor()
    return DockerExecutor.for_settings(settings, host_root)
