"""Container safety, for every stage a pipeline can run: never privileged, no extra
capabilities or host namespaces, only the NPU devices and GPUs asked for, data read-only,
no network for compute stages, the caller's (non-root) uid; and, against the built images,
no CA bundle, credential or host path left in any layer (`docker save`).

tests/test_orchestration_spec.py checks one spec at a time; this file sweeps whole pipelines
(demo, Ascend on chosen device ids, TensorRT on a chosen GPU) so a stage added later cannot
slip past, and tests/test_docker_engine.py has the running-container checks.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pcb.orchestration.docker_executor import container_spec
from pcb.orchestration.pipeline import full_pipeline
from pcb.orchestration.settings import settings_from_config
from pcb.orchestration.spec import NPU_COMMON_DEVICES, ContainerSpec
from pcb.orchestration.stage import StageCall

UID, GID = 1000, 1000
# Keyword arguments of containers.create that would widen what a container may do.
FORBIDDEN_KWARGS = (
    "cap_add",
    "pid_mode",
    "ipc_mode",
    "uts_mode",
    "userns_mode",
    "volumes",
    "volumes_from",
    "cgroupns",
    "sysctls",
    "device_cgroup_rules",
    "runtime",
)
# `docker run` options that would do the same (a word of the line, or its NAME= form).
FORBIDDEN_FLAGS = ("--privileged", "--cap-add", "--pid", "--ipc", "--uts", "--userns")


def fake_ascend_host(root: Path, ids: range = range(4)) -> Path:
    """A host with four NPUs: the stages must map only the ones chosen."""
    for name in [f"davinci{i}" for i in ids] + ["davinci_manager", "devmm_svm", "hisi_hdc"]:
        (root / "dev").mkdir(parents=True, exist_ok=True)
        (root / "dev" / name).touch()
    for folder in ("usr/local/Ascend/driver", "usr/local/dcmi"):
        (root / folder).mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/npu-smi").touch()
    return root


def pipelines() -> dict[str, list[StageCall]]:
    base: dict[str, Any] = {}
    return {
        "demo": full_pipeline(settings_from_config(base, demo=True)),
        "ascend": full_pipeline(
            settings_from_config(base, chip="310P3", devices="0,2", aoe=True, demo=True)
        ),
        "trt": full_pipeline(settings_from_config(base, trt=True, gpus="1", demo=True)),
    }


@pytest.fixture
def specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    """(pipeline, call, spec) of every stage, with data/ and results/ as the tasks use them."""
    monkeypatch.chdir(tmp_path)
    host = fake_ascend_host(tmp_path / "host")
    found = []
    for name, calls in pipelines().items():
        for call in calls:
            spec = container_spec(
                call,
                data_dir="data",
                results_dir="results",
                uid=UID,
                gid=GID,
                host_root=host,
            )
            found.append((name, call, spec))
    return found


def test_every_stage_of_every_pipeline_is_confined(
    specs: list[tuple[str, StageCall, ContainerSpec]],
) -> None:
    checked = specs
    assert len(checked) > 25  # demo, Ascend and TensorRT pipelines, every stage
    for pipeline, call, spec in checked:
        where = f"{pipeline}: {call.stage}"
        kwargs = spec.create_kwargs()
        assert kwargs["privileged"] is False, where
        assert "no-new-privileges" in kwargs["security_opt"], where
        for key in FORBIDDEN_KWARGS:
            assert key not in kwargs, f"{where}: {key}"
        assert kwargs["network_mode"] == "none", where  # no stage downloads anything
        assert kwargs["user"] == f"{UID}:{GID}", where
        assert kwargs["cap_drop"] == ["ALL"], where
        assert kwargs["pids_limit"] >= 4096, where
        assert kwargs["mem_limit"] == kwargs["memswap_limit"] > 0, where
        words = shlex.split(spec.to_docker_run())
        for flag in FORBIDDEN_FLAGS:
            assert not [w for w in words if w == flag or w.startswith(flag + "=")], where
        assert not [w for w in words if w.startswith("/:") or w.startswith("/:/")], where
        assert words[words.index("--cap-drop") + 1] == "ALL", where

        data, results, *extra = spec.mounts
        assert data.target == "/data" and data.read_only is (call.stage != "demo-data"), where
        assert results.target == "/results" and not results.read_only, where
        # Besides data/ and results/, only the Ascend driver files, read-only.
        for mount in extra:
            assert call.npu_devices and mount.read_only, f"{where}: {mount}"
            assert mount.source.startswith("/usr/local/"), f"{where}: {mount}"


def test_only_the_chosen_npus_and_gpus_are_mapped(
    specs: list[tuple[str, StageCall, ContainerSpec]],
) -> None:
    for pipeline, call, spec in specs:
        where = f"{pipeline}: {call.stage}"
        kwargs = spec.create_kwargs()
        if call.npu_devices:
            assert pipeline == "ascend", where
            # Chosen: 0 and 2 (convert tunes on one of them); never 1 or 3, which exist too.
            chips = {d for d in spec.devices if d not in NPU_COMMON_DEVICES}
            assert chips and chips <= {"/dev/davinci0", "/dev/davinci2"}, where
            assert set(NPU_COMMON_DEVICES) <= set(spec.devices), where
            assert all(d.endswith(":rwm") for d in kwargs["devices"])
        else:
            assert "devices" not in kwargs, where
        if call.gpus is not None:
            assert pipeline == "trt", where
            [request] = kwargs["device_requests"]
            assert request["DeviceIDs"] == ["1"] and not request["Count"], where
            assert "--gpus '\"device=1\"'" in spec.to_docker_run()
        else:
            assert "device_requests" not in kwargs, where


def test_stage_images_declare_a_non_root_user() -> None:
    from pcb.orchestration.images import IMAGES, PROJECT_ROOT

    for name in IMAGES:
        dockerfile = (PROJECT_ROOT / "docker" / name / "Dockerfile").read_text()
        users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
        assert users and users[-1] not in ("root", "0", "0:0"), name


# ---------------------------------------------------------------- the built images


HOST_SECRETS = re.compile(
    rb"(://[^/\s:@\"']+:[^/\s@\"']+@"  # credentials in a URL
    rb"|ghp_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_-]{20,}"
    rb"|hf_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
)
SECRET_FILES = {
    "pip.conf",
    "pip.ini",
    ".netrc",
    ".pypirc",
    ".git-credentials",
    "id_rsa",
    "id_ed25519",
    "ca.crt",
}
TEXT_LIMIT = 1 << 20
SYSTEM_PATHS = ("/etc/", "/usr/", "/var/", "/lib/")
# Library sources and documentation are full of example URLs with `user:password@` and
# example paths; a build leaks through configuration and metadata files instead (pip.conf,
# direct_url.json, pyvenv.cfg, an env file), which is what the content scan reads.
SOURCE_SUFFIXES = (
    ".py",
    ".pyi",
    ".pyx",
    ".pxd",
    ".c",
    ".h",
    ".cpp",
    ".hpp",
    ".cuh",
    ".md",
    ".rst",
    ".txt",
    ".html",
    ".js",
)


def _layers(archive: Path) -> list[tuple[str, bytes]]:
    """(name, tar bytes) of every layer of a `docker save` archive, both archive formats."""
    layers = []
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            if member.name.endswith("layer.tar") or member.name.startswith("blobs/"):
                data = outer.extractfile(member).read()  # type: ignore[union-attr]
                if tarfile.is_tarfile(io.BytesIO(data)):
                    layers.append((member.name, data))
    return layers


def _config(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        return json.load(outer.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]


def _needles() -> list[bytes]:
    """Host paths a build could leak: the project folder, the build CA bundle's location."""
    from pcb.orchestration.images import PROJECT_ROOT

    needles = [str(PROJECT_ROOT).encode()]
    for variable in ("PIP_CERT", "PIP_FIND_LINKS"):
        value = os.environ.get(variable, "")
        # A system path (the distribution's CA bundle) is in every Debian image by right.
        if value.startswith("/") and not value.startswith(SYSTEM_PATHS):
            needles.append(value.encode())
    return needles


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("family", ["runtime", "export"])
def test_no_ca_bundle_credential_or_host_path_in_any_layer(family: str, tmp_path: Path) -> None:
    from pcb.errors import PcbError
    from pcb.orchestration import docker_executor, images

    try:
        client = docker_executor.connect(timeout=30)
    except PcbError as error:
        pytest.skip(f"no Docker engine: {error}")
    from docker.errors import ImageNotFound

    reference = images.IMAGES[family].latest
    try:
        image = client.images.get(reference)
    except ImageNotFound:
        pytest.skip(f"{reference} is not built: `invoke build --image {family}` first")
    archive = tmp_path / "image.tar"
    with archive.open("wb") as stream:
        for chunk in image.save(named=False):
            stream.write(chunk)

    needles = _needles()
    # A custom CA bundle given to pip for the build; the system one is the image's own too.
    bundle = os.environ.get("PIP_CERT", "")
    bundle_sha = None
    if bundle and not bundle.startswith(SYSTEM_PATHS) and Path(bundle).is_file():
        bundle_sha = hashlib.sha256(Path(bundle).read_bytes()).hexdigest()
    # The image's own metadata: environment, labels, the command of every history step.
    config = _config(archive)
    metadata = json.dumps(
        [config.get("config", {}), [h.get("created_by", "") for h in config.get("history", [])]]
    ).encode()
    for needle in needles:
        assert needle not in metadata, needle
    assert not HOST_SECRETS.search(metadata)
    for word in (b"INDEX_URL", b"FIND_LINKS", b"PIP_CERT", b"build-ca"):
        assert word not in metadata, word
    user = config.get("config", {}).get("User", "")
    assert user and user.split(":")[0] not in ("root", "0")

    found: list[str] = []
    layers = _layers(archive)
    assert layers
    for layer_name, data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as layer:
            for member in layer.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if "build-ca" in member.name or base in SECRET_FILES:
                    found.append(f"{layer_name}: {member.name}")
                if not member.isfile() or member.size > TEXT_LIMIT:
                    continue
                content = layer.extractfile(member).read()  # type: ignore[union-attr]
                if bundle_sha and hashlib.sha256(content).hexdigest() == bundle_sha:
                    found.append(f"{layer_name}: {member.name} is the build's CA bundle")
                if b"\0" in content[:8192] or member.name.endswith(SOURCE_SUFFIXES):
                    continue  # binary, or a library's source: see SOURCE_SUFFIXES
                for needle in needles:
                    if needle in content:
                        found.append(f"{layer_name}: {member.name} holds {needle.decode()}")
                match = HOST_SECRETS.search(content)
                if match:
                    found.append(f"{layer_name}: {member.name} holds {match.group(0)[:12]!r}")
    assert not found, "\n".join(found)


# ---------------------------------------------------------------- the lock across containers


@pytest.mark.docker
def test_a_container_and_a_host_process_share_the_run_lock(tmp_path: Path) -> None:
    """A run folder locked on the host refuses a stage in a container, and the other way
    round: the lock is one file seen through the bind mount, and the kernel is shared."""
    import dataclasses
    import subprocess
    import sys
    import time
    import uuid

    from reliability_helpers import REPO

    from pcb.errors import PcbError
    from pcb.orchestration import docker_executor, images
    from pcb.orchestration.spec import Mount, Roots, build_spec

    try:
        client = docker_executor.connect(timeout=30)
    except PcbError as error:
        pytest.skip(f"no Docker engine: {error}")
    from docker.errors import ImageNotFound

    try:
        client.images.get(images.IMAGES["runtime"].latest)
    except ImageNotFound:
        pytest.skip("pcb-runtime is not built: `invoke build --image runtime` first")
    for name in ("data", "results"):
        (tmp_path / name).mkdir()
        (tmp_path / name).chmod(0o777)
    roots = Roots.of(tmp_path / "data", tmp_path / "results")
    run = roots.results / "run"

    def spec_of(code: str) -> ContainerSpec:
        # This checkout's pcb, read-only over the image's: the image may predate the lock.
        spec = build_spec(
            StageCall("preprocess", "runtime"), images.IMAGES["runtime"].latest, roots
        )
        return dataclasses.replace(
            spec,
            entrypoint=("python", "-c", code),
            command=(),
            mounts=(*spec.mounts, Mount(str(REPO / "pcb"), "/src/pcb", read_only=True)),
            environment={**spec.environment, "PYTHONPATH": "/src"},
            labels={**spec.labels, "pcb.test": uuid.uuid4().hex},
        )

    def container(code: str) -> tuple[int, str]:
        out = io.BytesIO()
        spec = spec_of(code)
        # As the executor does before a container starts: what a root caller (the host
        # process here) made is handed to the container's uid.
        docker_executor.prepare_folders(StageCall("preprocess", "runtime"), spec)
        status = docker_executor.run_spec(spec, client, out)
        return status, out.getvalue().decode(errors="replace")

    take = (
        "from pcb.record.runlock import RunLock; "
        "RunLock('/results/run', 'preprocess').acquire(); "
    )
    run.mkdir()
    # Host holds it: the container is refused.
    host = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pcb.record.runlock import RunLock; RunLock({str(run)!r}, 'export').acquire(); "
            "print('held', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert host.stdout is not None and host.stdout.readline().strip() == "held"
        status, output = container(take + "print('got it')")
        assert status == 1, output
        assert "is in use by stage export" in output and "got it" not in output
    finally:
        host.kill()
        host.wait()
    # Free again: the container takes it.
    status, output = container(take + "print('got it')")
    assert status == 0 and "got it" in output, output

    # The container holds it: a stage on the host is refused, naming the container's stage.
    held_spec = spec_of(take + "print('held', flush=True); import time; time.sleep(60)")
    docker_executor.prepare_folders(StageCall("preprocess", "runtime"), held_spec)
    held = client.containers.create(**held_spec.create_kwargs())
    try:
        held.start()
        deadline = time.monotonic() + 60
        while b"held" not in held.logs():
            assert time.monotonic() < deadline, held.logs()
            time.sleep(0.1)
        result = subprocess.run(
            [sys.executable, "-m", "pcb", "export", "--checkpoint", "x.pt", "--run", str(run)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert result.returncode == 1
        assert f"run folder {run} is in use by stage preprocess" in result.stderr
    finally:
        held.remove(force=True)
