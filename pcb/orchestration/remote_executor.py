"""A stage in its container on another Docker engine, with no file system shared with it.

The engine may be on another host (ssh://, tcp:// with TLS, a context), so this host's folders
mean nothing there. For each run, two named volumes on that engine stand for data/ and
results/ (`pcb-<key>-data`, `pcb-<key>-results`, labelled with the run and the checkout), and
a stage runs like this:

1. the engine answers (else: an error naming it and the stage), and holds the stage's image
   with the same id as here: loaded from this host's engine through the API when it lacks it
   (`docker save | docker load`); a content tag holding other content there is refused;
2. the run folder's lock is taken here, as a local stage would;
3. a helper container mounting both volumes receives what the stage reads (its Path arguments
   that exist here: the dataset's JPEGs, the checkpoint, the run folder) and sends only what
   differs by content (transfer.py);
4. the stage's container runs there with the volumes at /data and /results (no bind mount of
   any path of this host), its logs streamed here;
5. what it wrote under its run folder comes back, by content again, into the run folder here:
   the manifest it updated, its records and outputs, exactly as a local stage leaves them.

The volumes stay between stages (a preprocessed bin made there is not sent back and forth
again) until `invoke clean --engine ...` removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..provenance import HOST_ENV
from ..record.fingerprint import MANIFEST_NAME
from ..record.manifest import merge_entries, read_manifest
from . import limits
from .docker_executor import gpu_runtime_available, run_spec
from .endpoints import Endpoint, client_for
from .engine import connect, short_error
from .executors import Preview
from .images import PROJECT_ROOT, image_def
from .lifecycle import remove_orphans
from .owner import LABEL_CHECKOUT, LABEL_RUN, LABEL_STAGE, owner_labels
from .parallel import RunGate
from .settings import Settings
from .spec import (
    DATA_TARGET,
    IMAGE_ID_ENV,
    RESULTS_TARGET,
    ContainerSpec,
    Mount,
    Roots,
    build_spec,
    container_path,
)
from .stage import StageCall
from .transfer import BATCH_BYTES, HELPER, Helper, OnBatch, Root, TransferStats, human_bytes
from .transfer import download as fetch
from .transfer import upload as send
from .users import IMAGE_USER

LABEL_VOLUME = "pcb.volume"  # data | results
LABEL_ROLE = "pcb.role"  # transfer: a helper container


def run_key(results_dir: Path | str, run: Path | str = "") -> str:
    """The volumes' name part: this checkout's results folder, so that runs of two checkouts
    never share a volume while the stages of one run do."""
    text = f"{PROJECT_ROOT}\0{os.path.realpath(results_dir)}\0{run}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def volume_names(results_dir: Path | str) -> tuple[str, str]:
    key = run_key(results_dir)
    return f"pcb-{key}-data", f"pcb-{key}-results"


def volume_spec(spec: ContainerSpec, data_volume: str, results_volume: str) -> ContainerSpec:
    """The spec with data/ and results/ as the engine's volumes: every bind mount of this host
    goes (the Ascend host files would be the far host's: see `remote_npu_mounts`)."""
    mounts = []
    for mount in spec.mounts:
        if mount.target == DATA_TARGET:
            mounts.append(Mount(data_volume, DATA_TARGET, mount.read_only, kind="volume"))
        elif mount.target == RESULTS_TARGET:
            mounts.append(Mount(results_volume, RESULTS_TARGET, False, kind="volume"))
        else:
            mounts.append(mount)  # the NPU driver folder: a path of the far host, by design
    return replace(spec, mounts=tuple(mounts))


class RemoteExecutor:
    """Each stage in its container on `endpoint`, through volumes (see the module docstring)."""

    name = "remote"

    def __init__(
        self,
        endpoint: Endpoint,
        data_dir: Path | str = "data",
        results_dir: Path | str = "results",
        memory_limit: object = limits.AUTO,
        client: Any = None,
        local_client: Any = None,
        batch_bytes: int = BATCH_BYTES,
        on_batch: OnBatch | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.data_dir, self.results_dir = data_dir, results_dir
        self.memory_limit = memory_limit
        self._client, self._local = client, local_client
        self.batch_bytes, self.on_batch = batch_bytes, on_batch
        self.log = log or (lambda line: print(line, flush=True))
        self.sent = TransferStats()
        self.received = TransferStats()
        self.created: list[dict] = []  # the engine's view of each stage container it made
        self._host: str | None = None
        # This checkout's content tag of an image on this host (the local DockerExecutor's
        # image_for), so the far engine runs what this checkout built, not a shared :latest.
        self.local_image: Callable[[StageCall], str] | None = None
        # In parallel chains (parallel.py) the run folder is held only around transfers.
        self.parallel = False
        self._busy = threading.Lock()
        self._probed: list[tuple[str, ...]] = []  # device sets this engine was probed for

    @classmethod
    def for_settings(cls, settings: Settings, endpoint: Endpoint) -> RemoteExecutor:
        return cls(endpoint, settings.data_dir, settings.results_dir, settings.memory_limit)

    def client(self, stage: str = "") -> Any:
        if self._client is None:
            self._client = client_for(self.endpoint, stage)
        return self._client

    def host(self, stage: str = "") -> str:
        """The engine's host name (what the records' `host` names)."""
        if self._host is None:
            self._host = str(self.client(stage).info().get("Name") or self.endpoint)
        return self._host

    # ---- what would run -------------------------------------------------------------------

    def spec(self, call: StageCall, image: str, memory_total: int | None = None) -> ContainerSpec:
        roots = Roots.of(self.data_dir, self.results_dir)
        uid, gid = IMAGE_USER
        memory = limits.parse_memory_limit(self.memory_limit, total=memory_total)
        spec = build_spec(
            call,
            image,
            roots,
            uid=uid,
            gid=gid,
            host_root=Path("/nonexistent-remote-host"),  # nothing of this host's /dev or /usr
            require_npu=False,
            memory_limit=0 if memory is None else memory,
        )
        return volume_spec(spec, *volume_names(self.results_dir))

    def preview(self, call: StageCall) -> Preview:
        spec = self.spec(call, image_def(call.image).latest)
        data, results = volume_names(self.results_dir)
        command = f"{self.endpoint.cli_prefix()} {spec.to_docker_run().removeprefix('docker ')}"
        # The transfers have no docker command line: the dry run says they happen.
        where = (
            f"pcb-{call.image} on {self.endpoint}; its inputs sent to volumes {data} and "
            f"{results} there first, its run folder fetched back after"
        )
        return Preview(where, command, spec.command, spec.environment)

    # ---- running --------------------------------------------------------------------------

    def roots(self, call: StageCall, outputs: bool) -> list[Root]:
        """The call's Path arguments as transfer roots: those that exist here (inputs), or
        those under results/ and, for demo-data, data/ (outputs). Nested ones are dropped."""
        local = Roots.of(self.data_dir, self.results_dir)
        found: dict[Path, str] = {}
        for arg in call.args:
            if not isinstance(arg, Path):
                continue
            path = Path(os.path.realpath(os.path.abspath(arg)))
            remote = container_path(path, local, call.stage)
            if outputs:
                wanted = remote.startswith(RESULTS_TARGET + "/") or (
                    call.writes_data and remote.startswith(DATA_TARGET + "/")
                )
            else:
                wanted = path.exists()
            if wanted:
                found[path] = remote
        kept = [p for p in found if not any(o != p and o in p.parents for o in found)]
        return [Root(p, found[p]) for p in sorted(kept)]

    def run(self, call: StageCall) -> None:
        # One stage at a time on an engine: chains in parallel on it would only contend for
        # its CPU / NPU, and its volumes hold one copy of the run folder.
        with self._busy:
            self._run(call)

    def _prepare(self, call: StageCall) -> tuple[Any, str, ContainerSpec]:
        """The engine's client, the image there and the stage's spec, after the checks that
        cost no transfer: the engine answers, holds the image, has the NVIDIA runtime when
        the stage asks for GPUs, and lets a container have the stage's devices and host
        folders (probed once per set of devices)."""
        where = f"{self.endpoint}"
        client = self.client(call.stage)
        remove_orphans(client, PROJECT_ROOT)
        source = self.local_image(call) if self.local_image is not None else None
        image, image_id = ensure_image(
            self._local_client(), client, call.image, where, self.log, source
        )
        if call.gpus is not None and not gpu_runtime_available(client):
            raise PcbError(
                f"stage {call.stage} asks for GPUs, but the engine {where} (host {self.host()}) "
                "has no NVIDIA runtime: install the NVIDIA Container Toolkit on that host and "
                "register it with its engine (`nvidia-ctk runtime configure --runtime=docker`)"
            )
        info = client.info()
        spec = self.spec(call, image, info.get("MemTotal"))
        spec = replace(
            spec,
            environment={**spec.environment, HOST_ENV: self.host(), IMAGE_ID_ENV: image_id},
        )
        if spec.devices and spec.devices not in self._probed:
            self._probe_devices(client, call, spec)
            self._probed.append(spec.devices)
        return client, image, spec

    def preflight(self, calls: Sequence[StageCall]) -> None:
        """Before the run starts: each of these calls that asks for NPU devices or GPUs checked
        on this engine as its stage would be (`_prepare`), so that a host without them stops
        the run in seconds, not after the export and preprocessing."""
        for call in calls:
            if call.npu_devices or call.gpus is not None:
                with self._busy:
                    self._prepare(call)

    def _run(self, call: StageCall) -> None:
        where = f"{self.endpoint}"
        self.log(f"==> {call.stage} [pcb-{call.image} on {where}]: {' '.join(call.argv())}")
        client, image, spec = self._prepare(call)
        run_dir = call.run_dir()
        # Sequential (as a local stage would): the run folder is ours for the whole stage. In
        # parallel: only while sending and fetching, so that a stage here runs meanwhile.
        gate = RunGate(run_dir) if run_dir is not None else None
        whole = gate.held(call.stage) if gate is not None and not self.parallel else nullcontext()
        with whole:
            self._volumes(client, call)
            helper = self._helper(client, call, image)
            try:
                seen: dict = {}
                with self._transfer(gate, call.stage):
                    before = _manifest_of(run_dir)
                    self._send(helper, call, where, seen)
                status = self._run_stage(client, call, spec, where)
                if status == 0:
                    with self._transfer(gate, call.stage):
                        self._fetch(helper, call, where, seen, before)
            finally:
                _remove(helper.container)
        if status != 0:
            raise PcbError(
                f"stage {call.stage} failed on {where} (host {self.host()}) in its container "
                f"({spec.image}) with exit status {status}; its outputs so far stay in the "
                f"engine's volumes and a re-run continues from them. By hand:\n  "
                f"{self.endpoint.cli_prefix()} {spec.to_docker_run().removeprefix('docker ')}"
            )

    def _transfer(self, gate: RunGate | None, stage: str) -> Any:
        return gate.held(stage) if gate is not None and self.parallel else nullcontext()

    @contextmanager
    def _counted(
        self, total: TransferStats, stage: str, where: str, verb: str
    ) -> Iterator[TransferStats]:
        """One transfer's figures, added to the executor's `total` and logged."""
        stats = TransferStats()
        try:
            yield stats
        finally:  # what a cut-off transfer had moved counts too
            total.add(stats)
        self.log(_line(stage, where, verb, stats))

    def _send(self, helper: Helper, call: StageCall, where: str, seen: dict) -> None:
        with self._counted(self.sent, call.stage, where, "sent") as uploaded:
            send(
                helper,
                self.roots(call, outputs=False),
                *IMAGE_USER,
                batch_bytes=self.batch_bytes,
                on_batch=self.on_batch,
                stats=uploaded,
                seen=seen,
            )

    def _fetch(
        self, helper: Helper, call: StageCall, where: str, seen: dict, before: dict | None
    ) -> None:
        """The stage's outputs back here, and its manifest: fetched whole when the one here is
        still the one sent (stages in turn: nothing else wrote it), else only the entries the
        stage changed merged into ours (a chain running here meanwhile has entries in it
        that the far side never saw, which a copy would lose)."""
        run_dir = call.run_dir()
        manifest = None
        if run_dir is not None:
            here = Path(run_dir) / MANIFEST_NAME
            there = self._container_path(here, call)
            if _changed_since(here, there, seen):
                manifest = there
        with self._counted(self.received, call.stage, where, "fetched") as fetched:
            fetch(
                helper,
                self.roots(call, outputs=True),
                batch_bytes=self.batch_bytes,
                on_batch=self.on_batch,
                stats=fetched,
                keep=seen,
                skip=(manifest,) if manifest else (),
            )
            if manifest is not None and run_dir is not None:
                self._merge(helper, manifest, run_dir, before)

    def _container_path(self, path: Path, call: StageCall) -> str:
        """Where the stage's container (and the transfer helper) sees this file of ours."""
        local = Roots.of(self.data_dir, self.results_dir)
        return container_path(Path(os.path.realpath(path)), local, call.stage)

    def _merge(self, helper: Helper, manifest: str, run_dir: Path, before: dict | None) -> None:
        try:
            there = json.loads(helper.read(manifest) or b"null")
        except Exception:  # the stage wrote none (not recorded): nothing to merge
            return
        if not isinstance(there, dict) or not isinstance(there.get("stages"), dict):
            return
        old = before or {}
        stages = _changed(there["stages"], old.get("stages"))
        inputs = _changed(there.get("inputs") or {}, old.get("inputs"))
        if stages or inputs or before is None:
            merge_entries(run_dir, stages, inputs, template=there)

    def _probe_devices(self, client: Any, call: StageCall, spec: ContainerSpec) -> None:
        """Before anything is sent: a container of the stage's image asking for the stage's
        devices and host folders, started and removed at once. The engine refuses it as it
        would refuse the stage, and the refusal becomes an error naming the host, the stage
        and what that host lacks (a second instead of a transfer and a failed stage)."""
        from docker.errors import APIError

        kwargs = spec.create_kwargs()
        container = None
        try:
            # The engine checks host folders when it creates a container, devices when it
            # starts one: either refusal is the host's answer.
            container = client.containers.create(
                spec.image,
                entrypoint=["true"],
                command=[],
                devices=list(kwargs.get("devices") or []),
                mounts=[m for m in kwargs["mounts"] if m.get("Type") == "bind"],
                network_mode="none",
                labels={**self._labels(call), LABEL_STAGE: f"{call.stage}-probe", **owner_labels()},
            )
            container.start()
        except APIError as error:
            raise PcbError(self._refusal(call, error)) from None
        finally:
            if container is not None:
                _remove(container)

    def _refusal(self, call: StageCall, error: Exception) -> str:
        text = short_error(error)
        missing = refused_host_path(str(error))
        where = f"the engine {self.endpoint} (host {self.host()})"
        if missing is None:
            return f"stage {call.stage} could not start on {where}: {text}"
        kind, path = missing
        what = "device" if kind == "device" else "folder"
        fix = (
            "The NPU's device files or its driver are missing on that host: install the Ascend "
            "driver there (`npu-smi info` on it should list the chips), or give --devices the "
            "ids that host has, or send the cann image to an engine on an NPU host "
            "(--engine cann=ssh://user@npu-host)"
            if call.npu_devices or "davinci" in path or "Ascend" in path
            else "Create it on that host, or run the stage on an engine whose host has it"
        )
        return (
            f"stage {call.stage} cannot run on {where}: that host has no {what} {path} "
            f"(the engine said: {text}). {fix}."
        )

    def _local_client(self) -> Any:
        if self._local is None:
            self._local = connect()
        return self._local

    def _labels(self, call: StageCall) -> dict[str, str]:
        run = call.run_dir()
        return {LABEL_CHECKOUT: str(PROJECT_ROOT), LABEL_RUN: str(run or "")}

    def _volumes(self, client: Any, call: StageCall) -> None:
        from docker.errors import NotFound

        for name, kind in zip(volume_names(self.results_dir), ("data", "results")):
            try:
                client.volumes.get(name)
            except NotFound:
                labels = {**self._labels(call), LABEL_VOLUME: kind}
                labels[LABEL_RUN] = str(Path(os.path.realpath(self.results_dir)))
                client.volumes.create(name, labels=labels)

    def _helper(self, client: Any, call: StageCall, image: str) -> Helper:
        data, results = volume_names(self.results_dir)
        from docker.types import Mount as SdkMount

        labels = {
            **self._labels(call),
            LABEL_STAGE: f"{call.stage}-transfer",
            LABEL_ROLE: "transfer",
            **owner_labels(),
        }
        container = client.containers.create(
            image,
            entrypoint=["python3", "-c", HELPER, "sleep"],
            command=[],
            mounts=[
                SdkMount(DATA_TARGET, data, type="volume"),
                SdkMount(RESULTS_TARGET, results, type="volume"),
            ],
            network_mode="none",
            user="0:0",
            labels=labels,
            detach=True,
            init=True,
        )
        self._record(container)
        container.start()
        return Helper(container, str(self.endpoint), call.stage)

    def _record(self, container: Any) -> None:
        try:
            container.reload()
            self.created.append(container.attrs)
        except Exception:  # a fake client in tests
            pass

    def _run_stage(self, client: Any, call: StageCall, spec: ContainerSpec, where: str) -> int:
        from docker.errors import APIError

        recording = _Recording(client, self._record)
        try:
            return run_spec(spec, recording)
        except APIError as error:
            raise PcbError(self._refusal(call, error)) from None


class _Recording:
    """The client, with each container it creates recorded (`RemoteExecutor.created`: what
    the tests check for bind mounts of this host)."""

    def __init__(self, client: Any, record: Callable[[Any], None]) -> None:
        self._client, self._record = client, record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    @property
    def containers(self) -> Any:
        outer = self

        class Containers:
            def __getattr__(self, name: str) -> Any:
                return getattr(outer._client.containers, name)

            def create(self, *args: Any, **kwargs: Any) -> Any:
                container = outer._client.containers.create(*args, **kwargs)
                outer._record(container)
                return container

        return Containers()


def _changed_since(path: Path, key: str, seen: dict) -> bool:
    """Whether the file here is no longer what the upload listed (`seen`, by container path:
    this file's is `key`)."""
    from ..record.digest import file_digest

    now = (path.stat().st_size, file_digest(path)) if path.is_file() else None
    return now != seen.get(key)


def _changed(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entries of `new` that `old` lacks or holds otherwise."""
    old = old or {}
    return {key: value for key, value in new.items() if value != old.get(key)}


def _manifest_of(run_dir: Path | None) -> dict | None:
    """The run's manifest here as it is sent (what the far side's stage starts from)."""
    if run_dir is None:
        return None
    try:
        return read_manifest(Path(run_dir))
    except PcbError:
        return None


# What the engine says when a container asks for what its host lacks (moby, verbatim formats:
# oci/devices_linux.go `error gathering device information while adding custom device %q: %s`;
# volume/mounts `invalid mount config for type %q: bind source path does not exist: %s`).
# tests/fixtures/docker_missing_host_path.txt holds both as engine 20.10.24 said them, through
# the docker 28 and 20.10 CLIs; the older CLI ends the message with a full stop, which a path
# read from such text must not keep (tests/fixtures/docker_missing_bind_source_public.txt).
_DEVICE = re.compile(r'error gathering device information while adding custom device "([^"]+)"')
_BIND = re.compile(r"bind source path does not exist: (\S+)")


def refused_host_path(text: str) -> tuple[str, str] | None:
    """("device", path) or ("folder", path) when the engine refused a container for a host path
    its host lacks; None for any other error."""
    found = _DEVICE.search(text)
    if found:
        return "device", found.group(1)
    found = _BIND.search(text)
    if found:
        return "folder", found.group(1).rstrip(".")
    return None


def _line(stage: str, where: str, verb: str, stats: TransferStats) -> str:
    moved = stats.files_sent + stats.files_received
    size = stats.bytes_sent + stats.bytes_received
    return (
        f"    {stage} on {where}: {verb} {moved} file(s), {human_bytes(size)} in "
        f"{stats.seconds:.1f} s; {stats.files_already} file(s), "
        f"{human_bytes(stats.bytes_already)} already there"
    )


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except Exception as error:  # gone already, or the engine went away: clean removes it
        print(f"warning: could not remove helper container: {error}", file=sys.stderr)


# ---- images --------------------------------------------------------------------------------------


def ensure_image(
    local: Any,
    remote: Any,
    family: str,
    where: str,
    log: Callable[[str], None],
    source: str | None = None,
) -> tuple[str, str]:
    """(reference, image id) of the family's image on the remote engine, the same image as
    here: its content tag (pcb-<family>:<hash>) when it has one. Loaded from this host's engine
    when the remote lacks it or holds other content under :latest; a content tag that names
    other content there is refused (the same tag must mean the same bytes everywhere).
    `source` is the image here to send: this checkout's content tag when the local executor
    knows it (else the family's :latest, whichever content tag that holds)."""
    from docker.errors import ImageNotFound

    definition = image_def(family)
    wanted = source or definition.latest
    try:
        here = local.images.get(wanted)
    except ImageNotFound:
        raise PcbError(
            f"image {wanted} is not on this machine, and the engine {where} gets "
            f"its images from here: build it with `invoke build --image {family}`"
        ) from None
    content = sorted(
        tag
        for tag in here.tags
        if tag.startswith(f"{definition.repository}:") and not tag.endswith(":latest")
    )
    if source is not None and source != definition.latest:
        content = [source]
    reference = content[0] if content else definition.latest
    try:
        there = remote.images.get(reference)
    except ImageNotFound:
        there = None
    if there is not None and there.id != here.id and reference != definition.latest:
        raise PcbError(
            f"image {reference} on {where} is not the one here ({there.id[:19]} there, "
            f"{here.id[:19]} here): the same content tag must mean the same image. Remove it "
            f"there (`docker rmi {reference}`) and run again to load this one"
        )
    if there is None:
        try:  # the same image under another tag there: tagging it is all it takes
            there = remote.images.get(here.id)
            repository, _, tag = reference.rpartition(":")
            there.tag(repository, tag)
        except ImageNotFound:
            there = None
    if there is None or there.id != here.id:
        started = time.monotonic()
        log(f"    loading {reference} into {where} (docker save | docker load, through the API)")
        remote.images.load(here.save(named=reference))
        there = remote.images.get(reference)
        if there.id != here.id:
            raise PcbError(f"image {reference} loaded into {where} with another id: {there.id}")
        there.tag(definition.repository, "latest")
        log(f"    loaded in {time.monotonic() - started:.0f} s")
    return reference, here.id


# ---- clean ---------------------------------------------------------------------------------------


def clean_engine(client: Any, where: str, dry_run: bool = False) -> list[str]:
    """This checkout's leftover containers on a remote engine (those of a live run are left)
    and its run volumes: one line each."""
    from docker.errors import APIError

    from .lifecycle import clean_containers

    verb = "would remove" if dry_run else "removed"
    removed, kept = clean_containers(client, PROJECT_ROOT, dry_run)
    lines = [f"{where}: {verb} container {c.describe()}" for c in removed]
    lines += [f"{where}: left container {c.describe()}" for c in kept]
    for volume in client.volumes.list(filters={"label": f"{LABEL_CHECKOUT}={PROJECT_ROOT}"}):
        if dry_run:
            lines.append(f"{where}: would remove volume {volume.name}")
            continue
        try:
            volume.remove()
            lines.append(f"{where}: removed volume {volume.name}")
        except APIError as error:  # a live run's container still mounts it
            lines.append(f"{where}: left volume {volume.name}: {short_error(error)}")
    if not lines:
        lines.append(f"{where}: nothing to clean")
    return lines
