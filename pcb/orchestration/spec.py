"""A stage call as a container spec: image, command, mounts, devices, user, environment, network.

Pure: building a spec reads the host file system only to find which Ascend files exist (under
`host_root`, "/" unless a test says otherwise) and never talks to Docker, so every rule here is
tested without an engine. `docker_executor` runs a spec through the Docker SDK;
`ContainerSpec.to_docker_run()` prints the same thing as a `docker run` command line.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Union

from ..ascend.visible import CONTAINER_DEVICES_ENV, container_devices_value
from ..errors import PcbError
from ..progress import PROGRESS_INTERVAL_ENV
from ..provenance import HOST_DATA_ENV, HOST_ENV, HOST_RESULTS_ENV, host_name
from . import limits
from .images import PROJECT_ROOT
from .owner import LABEL_CHECKOUT, LABEL_IMAGE, LABEL_RUN, LABEL_STAGE
from .stage import StageCall
from .users import run_as

# No process in a stage's container may gain privileges (a setuid binary, file capabilities):
# nothing a stage runs needs to, NPU and GPU tools included.
SECURITY_OPTIONS = ("no-new-privileges",)
# No capability either, NPU and GPU stages included. A container runs as a non-root uid
# (users.run_as), and a non-root process has no effective capability whatever the bounding set
# holds (execve clears them; tests/test_docker_engine.py shows CapEff 0 under Docker's default
# set), so dropping the set takes nothing a stage uses away; it only closes the way back to
# one. Ascend: Huawei's CANN install guide has inference run by a non-root user in the
# HwHiAiUser group, which the device nodes' group grants (we add that group; see npu_host):
# https://www.hiascend.com/document/detail/zh/canncommercial/80RC3/softwareinst/instg/instg_0003.html
# NVIDIA: the driver files and device nodes are put in by the toolkit's prestart hook, a host
# process that sets its own capabilities (libnvidia-container src/cli/configure.c), not the
# container's; SYS_ADMIN is only wanted for management such as `nvidia-smi -pl`
# (NVIDIA/nvidia-docker#495), which no stage does. Neither documents a capability for
# inference, so none is kept.
CAP_DROP = ("ALL",)
IMAGE_ENV = "PCB_IMAGE"
IMAGE_ID_ENV = "PCB_IMAGE_ID"
DATA_TARGET = "/data"
RESULTS_TARGET = "/results"
WORKDIR = "/work"
# Every container gets these; a StageCall's env adds to / overrides them.
BASE_ENVIRONMENT = {
    # A calling uid need not exist in the image's /etc/passwd: give it a writable home.
    "HOME": "/tmp",
    "PYTHONUNBUFFERED": "1",
}

# What an Ascend container needs from the host: Huawei's documented `docker run` for the CANN
# images (Ascend/cann-container-image README and OVERVIEW.md) maps /dev/davinci<N>,
# davinci_manager, devmm_svm, hisi_hdc and mounts /usr/local/dcmi, npu-smi, the driver's lib64
# and version.info (the whole driver folder here) and /etc/ascend_install.info, the record of
# where the driver is installed.
NPU_COMMON_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
NPU_DRIVER = "/usr/local/Ascend/driver"
NPU_DCMI = "/usr/local/dcmi"
NPU_INSTALL_INFO = "/etc/ascend_install.info"
NPU_SMI_CANDIDATES = ("/usr/local/bin/npu-smi", "/usr/local/sbin/npu-smi")
NPU_SMI_TARGET = "/usr/local/bin/npu-smi"

GpuSelection = Union[int, Sequence[str], None]  # count (-1: all), device ids, or none


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path, or (kind "volume") a named volume of the engine: what a
    remote engine's containers get instead of this host's folders (remote_executor.py)."""

    source: str  # absolute host path, or the volume's name
    target: str  # path in the container
    read_only: bool = True
    kind: str = "bind"

    def to_sdk(self) -> Any:
        from docker.types import Mount as SdkMount

        return SdkMount(self.target, self.source, type=self.kind, read_only=self.read_only)

    def to_cli(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class GpuRequest:
    """`--gpus`: a count (-1 = all) or explicit device ids."""

    count: int = -1
    device_ids: tuple[str, ...] = ()

    def to_sdk(self) -> Any:
        from docker.types import DeviceRequest

        if self.device_ids:
            return DeviceRequest(device_ids=list(self.device_ids), capabilities=[["gpu"]])
        return DeviceRequest(count=self.count, capabilities=[["gpu"]])

    def to_cli(self) -> str:
        if self.device_ids:
            return '"device=' + ",".join(self.device_ids) + '"'
        return "all" if self.count < 0 else str(self.count)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything `docker run` needs for one stage, and nothing else."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    devices: tuple[str, ...] = ()  # host device paths, mapped to the same path, rwm
    user: str | None = None  # "uid:gid"
    group_add: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    network: str = "none"
    gpus: GpuRequest | None = None
    workdir: str = WORKDIR
    init: bool = True  # docker-init as PID 1: signals forwarded, zombies reaped
    labels: Mapping[str, str] = field(default_factory=dict)
    stage: str = ""
    entrypoint: tuple[str, ...] | None = None  # None: the image's own (python -m pcb)
    security_opt: tuple[str, ...] = SECURITY_OPTIONS
    cap_drop: tuple[str, ...] = CAP_DROP
    pids_limit: int | None = None  # processes + threads; None: the engine's default
    memory_limit: int | None = None  # bytes, swap included; None: no limit
    # A terminal for the stage, given when the caller has one: its progress bars then redraw
    # live (without one the stage prints progress lines: pcb/progress.py).
    tty: bool = False

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of docker.DockerClient.containers.create()."""
        kwargs: dict[str, Any] = {
            "image": self.image,
            "command": list(self.command),
            "mounts": [mount.to_sdk() for mount in self.mounts],
            "environment": dict(self.environment),
            "network_mode": self.network,
            "working_dir": self.workdir,
            "init": self.init,
            "labels": dict(self.labels),
            "detach": True,
            # Never privileged, never extra capabilities, never the host's network, PID or
            # IPC namespace: nothing here sets them, and tests/test_container_safety.py
            # checks every stage's spec for it.
            "privileged": False,
            "security_opt": list(self.security_opt),
            "cap_drop": list(self.cap_drop),
        }
        if self.tty:
            kwargs["tty"] = True
        if self.pids_limit is not None:
            kwargs["pids_limit"] = self.pids_limit
        if self.memory_limit is not None:
            # Swap included: a stage over its limit stops with an error rather than thrashing.
            kwargs["mem_limit"] = self.memory_limit
            kwargs["memswap_limit"] = self.memory_limit
        if self.entrypoint is not None:
            kwargs["entrypoint"] = list(self.entrypoint)
        if self.user:
            kwargs["user"] = self.user
        if self.group_add:
            kwargs["group_add"] = list(self.group_add)
        if self.devices:
            kwargs["devices"] = [f"{device}:{device}:rwm" for device in self.devices]
        if self.gpus is not None:
            kwargs["device_requests"] = [self.gpus.to_sdk()]
        return kwargs

    def docker_run_argv(self) -> list[str]:
        argv = ["docker", "run", "--rm"]
        if self.tty:
            argv.append("-t")
        if self.init:
            argv.append("--init")
        if self.user:
            argv += ["--user", self.user]
        for group in self.group_add:
            argv += ["--group-add", group]
        argv += ["--network", self.network]
        for option in self.security_opt:
            argv += ["--security-opt", option]
        for capability in self.cap_drop:
            argv += ["--cap-drop", capability]
        if self.pids_limit is not None:
            argv += ["--pids-limit", str(self.pids_limit)]
        if self.memory_limit is not None:
            size = limits.docker_size(self.memory_limit)
            argv += ["--memory", size, "--memory-swap", size]
        for mount in self.mounts:
            argv += ["-v", mount.to_cli()]
        for device in self.devices:
            argv += ["--device", device]
        if self.gpus is not None:
            argv += ["--gpus", self.gpus.to_cli()]
        for key, value in self.environment.items():
            argv += ["-e", f"{key}={value}"]
        command = list(self.command)
        if self.entrypoint is not None:
            # --entrypoint takes one program; the rest of the entry point goes before the command.
            argv += ["--entrypoint", self.entrypoint[0] if self.entrypoint else ""]
            command = [*self.entrypoint[1:], *command]
        argv += ["-w", self.workdir, self.image, *command]
        return argv

    def to_docker_run(self) -> str:
        """The equivalent `docker run` command line, quoted for a POSIX shell."""
        argv = self.docker_run_argv()
        if self.gpus is not None and self.gpus.device_ids:
            # --gpus '"device=0,1"': the inner quotes belong to Docker's own parser.
            index = argv.index("--gpus") + 1
            quoted = [shlex.quote(a) if i != index else f"'{a}'" for i, a in enumerate(argv)]
            return " ".join(quoted)
        return shlex.join(argv)


@dataclass(frozen=True)
class Roots:
    """The two host folders a container sees: data/ (read-only, but for demo-data) at /data and
    results/ (read-write) at /results."""

    data: Path
    results: Path

    @classmethod
    def of(cls, data: Path | str = "data", results: Path | str = "results") -> Roots:
        return cls(_absolute(Path(data)), _absolute(Path(results)))


def _absolute(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def container_path(path: Path, roots: Roots, stage: str = "") -> str:
    """A host path under data/ or results/ as the container sees it; PcbError elsewhere."""
    host = _absolute(Path(path))
    # The deeper root wins, should one folder hold the other.
    candidates = sorted(
        ((roots.data, DATA_TARGET), (roots.results, RESULTS_TARGET)),
        key=lambda pair: len(pair[0].parts),
        reverse=True,
    )
    for root, target in candidates:
        if host == root or root in host.parents:
            relative = host.relative_to(root)
            return str(PurePosixPath(target, *relative.parts))
    who = f"stage {stage}: " if stage else ""
    raise PcbError(
        f"{who}the path {path} ({host}) is outside the folders a container sees: "
        f"{roots.data} (mounted at {DATA_TARGET}) and {roots.results} (mounted at "
        f"{RESULTS_TARGET}). Move or link it under one of them, or run the stage with --local."
    )


def container_argv(call: StageCall, roots: Roots) -> tuple[str, ...]:
    """`<stage> <args>` with every Path argument rewritten to its container path."""
    args = [
        container_path(arg, roots, call.stage) if isinstance(arg, Path) else str(arg)
        for arg in call.args
    ]
    return (call.stage, *args)


# ---- Ascend and NVIDIA -----------------------------------------------------------------------


@dataclass(frozen=True)
class NpuHost:
    """What an Ascend container takes from the host, as found on it."""

    devices: tuple[str, ...]
    mounts: tuple[Mount, ...]
    missing: tuple[str, ...]  # required host paths that are not there
    device_gid: int | None  # group owning /dev/davinci_manager (HwHiAiUser on a real host)


def npu_host(device_ids: Sequence[int], host_root: Path = Path("/")) -> NpuHost:
    """Device nodes /dev/davinci<N> for each id plus davinci_manager, devmm_svm, hisi_hdc; the
    driver folder, /usr/local/dcmi and /etc/ascend_install.info read-only; npu-smi from
    /usr/local/bin or /usr/local/sbin (whichever exists) read-only at /usr/local/bin/npu-smi.
    Device nodes and the driver folder are required (listed in `missing` when absent); dcmi,
    the install record and npu-smi are mounted when present."""
    if not device_ids:
        raise PcbError("no NPU device id given: use for example --device 0")
    for device_id in device_ids:
        if not isinstance(device_id, int) or isinstance(device_id, bool) or device_id < 0:
            raise PcbError(f"NPU device id {device_id!r} is not a non-negative integer")

    def exists(path: str) -> bool:
        return (host_root / path.lstrip("/")).exists()

    devices = tuple(f"/dev/davinci{i}" for i in sorted(set(device_ids))) + NPU_COMMON_DEVICES
    missing = [device for device in devices if not exists(device)]
    mounts = [Mount(NPU_DRIVER, NPU_DRIVER, read_only=True)]
    if not exists(NPU_DRIVER):
        missing.append(NPU_DRIVER)
    for optional in (NPU_DCMI, NPU_INSTALL_INFO):
        if exists(optional):
            mounts.append(Mount(optional, optional, read_only=True))
    for candidate in NPU_SMI_CANDIDATES:
        if exists(candidate):
            mounts.append(Mount(candidate, NPU_SMI_TARGET, read_only=True))
            break
    gid = None
    manager = host_root / NPU_COMMON_DEVICES[0].lstrip("/")
    if manager.exists():
        gid = manager.stat().st_gid
    return NpuHost(devices, tuple(mounts), tuple(missing), gid)


def npu_missing_message(missing: Sequence[str], device_ids: Sequence[int]) -> str:
    ids = ",".join(str(i) for i in device_ids)
    return (
        f"the NPU stage needs these on the host, which are missing: {', '.join(missing)}. "
        "Install the Ascend driver and firmware (`npu-smi info` should list the chips), and "
        f"choose device ids that exist (asked for: {ids}; `ls /dev/davinci*` shows them); "
        "or run a CPU stage instead."
    )


def gpu_request(gpus: GpuSelection) -> GpuRequest | None:
    """None: no GPU; an int: that many (-1: all); strings: those device ids / UUIDs."""
    if gpus is None:
        return None
    if isinstance(gpus, bool):
        raise PcbError(f"GPU selection {gpus!r}: give a count or device ids")
    if isinstance(gpus, int):
        if gpus == 0 or gpus < -1:
            raise PcbError(f"GPU count {gpus}: give a positive count, or -1 for all")
        return GpuRequest(count=gpus)
    ids = tuple(str(g) for g in gpus)
    if not ids:
        raise PcbError("empty GPU device id list: give ids such as 0,1 or leave it out")
    return GpuRequest(device_ids=ids)


# ---- the spec --------------------------------------------------------------------------------


def build_spec(
    call: StageCall,
    image: str,
    roots: Roots,
    *,
    uid: int | None = None,
    gid: int | None = None,
    host_root: Path = Path("/"),
    require_npu: bool = True,
    memory_limit: object = limits.AUTO,
    pids_limit: int | None = None,
) -> ContainerSpec:
    """The container spec of one stage call.

    data/ is mounted read-only at /data (read-write when the call writes data: demo-data),
    results/ read-write at /results; Path arguments are rewritten to those mounts. The
    container runs as uid:gid (default: the caller's), never as root: see users.run_as. It has
    no capabilities, at most `pids_limit` processes and threads (default limits.pids_limit())
    and `memory_limit` bytes (a setting as limits.parse_memory_limit reads it; default: the
    host's memory less a tenth). The network is "none" unless the call needs one. NPU device
    ids and GPUs come from the call. With `require_npu`, missing Ascend host files raise
    PcbError (a pre-flight check).
    """
    uid, gid = run_as(roots.results, uid, gid)
    mounts = [
        Mount(str(roots.data), DATA_TARGET, read_only=not call.writes_data),
        Mount(str(roots.results), RESULTS_TARGET, read_only=False),
    ]
    devices: tuple[str, ...] = ()
    group_add: list[str] = []
    # PCB_HOST: records name the machine that measured, not the container id; PCB_IMAGE:
    # the run manifest names the image each stage ran in.
    # PCB_HOST_RESULTS / PCB_HOST_DATA: the report names the host's folders, not the mounts.
    environment = {
        **BASE_ENVIRONMENT,
        HOST_ENV: host_name(),
        HOST_RESULTS_ENV: str(roots.results),
        HOST_DATA_ENV: str(roots.data),
        IMAGE_ENV: image,
        **call.env,
    }
    # How often a stage without a terminal prints a progress line (pcb/progress.py).
    if os.environ.get(PROGRESS_INTERVAL_ENV):
        environment[PROGRESS_INTERVAL_ENV] = os.environ[PROGRESS_INTERVAL_ENV]
    if call.npu_devices:
        npu = npu_host(call.npu_devices, host_root)
        if npu.missing and require_npu:
            raise PcbError(npu_missing_message(npu.missing, call.npu_devices))
        devices = npu.devices
        mounts += npu.mounts
        if npu.device_gid is not None and npu.device_gid != gid and uid != 0:
            group_add.append(str(npu.device_gid))
        # atc / ais_bench logs: somewhere writable whatever the uid.
        environment.setdefault("ASCEND_PROCESS_LOG_PATH", "/tmp/ascend-log")
        # The runtime inside numbers the mounted chips 0..k-1: the stages need the host ids
        # in mount order to give the tools the right one (pcb/ascend/visible.py).
        environment[CONTAINER_DEVICES_ENV] = container_devices_value(call.npu_devices)
    return ContainerSpec(
        image=image,
        command=container_argv(call, roots),
        mounts=tuple(mounts),
        devices=devices,
        user=f"{uid}:{gid}",
        group_add=tuple(group_add),
        environment=environment,
        network="bridge" if call.needs_network else "none",
        gpus=gpu_request(call.gpus),
        labels=stage_labels(call),
        stage=call.stage,
        pids_limit=limits.pids_limit() if pids_limit is None else pids_limit,
        memory_limit=limits.parse_memory_limit(memory_limit),
    )


def stage_labels(call: StageCall) -> dict[str, str]:
    """What a container is, as labels: its stage, image, run folder and checkout. (Its owner
    is added when it is started: see owner.owner_labels.)"""
    run_dir = call.run_dir()
    run = "" if run_dir is None else str(_absolute(run_dir))
    return {
        LABEL_STAGE: call.stage,
        LABEL_IMAGE: call.image,
        LABEL_RUN: run,
        LABEL_CHECKOUT: str(PROJECT_ROOT),
    }
