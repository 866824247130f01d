"""The executor and the builds against the real Docker engine (marked `docker`).

They need a running engine (`bash scripts/setup-docker`) and the runtime image
(`invoke base-image` then `invoke build --image runtime --base-image <tag>`); without either
they are skipped, saying which is missing. The reproducibility test also rebuilds the runtime
image without Docker's cache (about a minute, with access to the package index).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import docker_executor, images
from pcb.orchestration.base_image import BaseRecipe
from pcb.orchestration.spec import ContainerSpec, Roots, build_spec
from pcb.orchestration.stage import StageCall

pytestmark = pytest.mark.docker

RUNTIME = images.IMAGES["runtime"].latest
HOST_CA = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def client(docker_client):
    return docker_client


@pytest.fixture(scope="module")
def runtime_image(client) -> str:
    from docker.errors import ImageNotFound

    try:
        client.images.get(RUNTIME)
    except ImageNotFound:
        pytest.skip(f"{RUNTIME} is not built: `invoke build --image runtime` first")
    return RUNTIME


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    for name in ("data", "results"):
        (tmp_path / name).mkdir()
        # any uid may write: the tests choose the container's uid
        (tmp_path / name).chmod(0o777)
    return Roots.of(tmp_path / "data", tmp_path / "results")


def python_spec(spec: ContainerSpec, code: str, token: str) -> ContainerSpec:
    """The same spec running a Python snippet instead of `python -m pcb`."""
    return dataclasses.replace(
        spec,
        entrypoint=("python", "-c", code),
        command=(),
        labels={**spec.labels, "pcb.test": token},
    )


def leftovers(client, token: str) -> list:
    return client.containers.list(all=True, filters={"label": f"pcb.test={token}"})


def run(client, spec: ContainerSpec) -> tuple[int, str]:
    out = io.BytesIO()
    status = docker_executor.run_spec(spec, client, out)
    return status, out.getvalue().decode(errors="replace")


def test_data_is_read_only_and_results_writable(client, runtime_image, roots: Roots):
    token = uuid.uuid4().hex
    (roots.data / "input.txt").write_text("x")
    spec = build_spec(StageCall("preprocess", "runtime"), runtime_image, roots)
    code = (
        "import pathlib\n"
        "print(pathlib.Path('/data/input.txt').read_text())\n"
        "pathlib.Path('/results/ok.txt').write_text('written')\n"
        "pathlib.Path('/data/new.txt').write_text('no')\n"
    )
    status, output = run(client, python_spec(spec, code, token))
    assert status == 1
    assert "Read-only file system" in output
    assert (roots.results / "ok.txt").read_text() == "written"
    assert not (roots.data / "new.txt").exists()
    assert leftovers(client, token) == []


def test_demo_data_may_write_data(client, runtime_image, roots: Roots):
    spec = build_spec(StageCall("demo-data", "runtime", writes_data=True), runtime_image, roots)
    code = "import pathlib; pathlib.Path('/data/demo.txt').write_text('ok')"
    status, _ = run(client, python_spec(spec, code, uuid.uuid4().hex))
    assert status == 0 and (roots.data / "demo.txt").read_text() == "ok"


@pytest.mark.parametrize("uid", [None, 4321])
def test_outputs_are_owned_by_the_calling_user(client, runtime_image, roots: Roots, uid):
    gid = None if uid is None else uid + 1
    spec = build_spec(StageCall("report", "runtime"), runtime_image, roots, uid=uid, gid=gid)
    code = "import os, pathlib; pathlib.Path('/results/out.txt').write_text(str(os.getuid()))"
    status, output = run(client, python_spec(spec, code, uuid.uuid4().hex))
    assert status == 0, output
    written = (roots.results / "out.txt").stat()
    if uid is not None:
        expected = (uid, gid)
    elif os.getuid() != 0:
        expected = (os.getuid(), os.getgid())
    else:  # root's containers run as the images' pcb user (results/ is root's here)
        expected = (1000, 1000)
    assert (written.st_uid, written.st_gid) == expected


def test_no_network_unless_asked(client, runtime_image, roots: Roots):
    # Looks at the interfaces only: nothing is sent anywhere.
    code = "import os; print(sorted(os.listdir('/sys/class/net')))"
    spec = build_spec(StageCall("infer", "runtime"), runtime_image, roots)
    status, output = run(client, python_spec(spec, code, uuid.uuid4().hex))
    assert status == 0 and output.strip() == "['lo']"
    networked = build_spec(StageCall("infer", "runtime", needs_network=True), runtime_image, roots)
    status, output = run(client, python_spec(networked, code, uuid.uuid4().hex))
    assert status == 0 and "eth0" in output


def test_exit_status_propagates_and_container_is_removed(client, runtime_image, roots: Roots):
    token = uuid.uuid4().hex
    spec = build_spec(StageCall("infer", "runtime"), runtime_image, roots)
    status, output = run(client, python_spec(spec, "print('failing'); raise SystemExit(3)", token))
    assert status == 3 and "failing" in output
    assert leftovers(client, token) == []


def test_failed_stage_raises_pcb_error(client, runtime_image, roots: Roots):
    call = StageCall("no-such-stage", "runtime", ("--run", roots.results / "r"))
    out = io.BytesIO()
    with pytest.raises(PcbError, match=r"stage no-such-stage failed .* exit status 2"):
        docker_executor.run_in_container(
            call, data_dir=roots.data, results_dir=roots.results, client=client, output=out
        )
    assert b"invalid choice" in out.getvalue()


def test_a_real_stage_runs(client, runtime_image, roots: Roots):
    call = StageCall("report", "runtime", ("--help",))
    out = io.BytesIO()
    spec = docker_executor.run_in_container(
        call, data_dir=roots.data, results_dir=roots.results, client=client, output=out
    )
    assert b"usage: pcb report" in out.getvalue()
    assert spec.image == runtime_image


def test_container_removed_after_ctrl_c(client, runtime_image, roots: Roots):
    token = uuid.uuid4().hex

    class InterruptingOutput(io.BytesIO):
        def write(self, data):
            super().write(data)
            raise KeyboardInterrupt

    spec = build_spec(StageCall("perf", "runtime"), runtime_image, roots)
    code = "import time; print('started', flush=True); time.sleep(120)"
    with pytest.raises(KeyboardInterrupt):
        docker_executor.run_spec(python_spec(spec, code, token), client, InterruptingOutput())
    assert leftovers(client, token) == []


# ---- least privilege and limits, seen from inside ----------------------------------------------

INSIDE = """
import json, os
def read(*paths):
    for path in paths:
        try:
            return open(path).read().strip()
        except OSError:
            pass
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
print(json.dumps({
    "uid": os.getuid(),
    "CapEff": status["CapEff"].strip(),
    "CapBnd": status["CapBnd"].strip(),
    "NoNewPrivs": status["NoNewPrivs"].strip(),
    # cgroup v2, then v1
    "pids": read("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    "memory": read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
}))
"""


def inside(client, spec: ContainerSpec) -> tuple[dict, dict]:
    """(what the container's process sees, the engine's HostConfig of the container)."""
    import json

    token = uuid.uuid4().hex
    container = client.containers.create(**python_spec(spec, INSIDE, token).create_kwargs())
    try:
        host_config = client.api.inspect_container(container.id)["HostConfig"]
        container.start()
        assert int(container.wait().get("StatusCode", 1)) == 0, container.logs()
        return json.loads(container.logs(stdout=True, stderr=False)), host_config
    finally:
        container.remove(force=True)


def test_a_stage_runs_unprivileged_and_limited(client, runtime_image, roots: Roots):
    """The default spec, as `invoke <stage>` makes it (as root in CI): a non-root uid, no
    capability at all, no new privileges, the pids and memory limits of the spec."""
    spec = build_spec(StageCall("preprocess", "runtime"), runtime_image, roots)
    seen, host_config = inside(client, spec)
    assert seen["uid"] != 0
    assert int(seen["CapEff"], 16) == 0 and int(seen["CapBnd"], 16) == 0
    assert seen["NoNewPrivs"] == "1"
    assert spec.pids_limit and int(seen["pids"]) == spec.pids_limit
    assert spec.memory_limit and int(seen["memory"]) == spec.memory_limit
    assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
    assert host_config["PidsLimit"] == spec.pids_limit
    assert host_config["Memory"] == host_config["MemorySwap"] == spec.memory_limit
    assert host_config["Privileged"] is False
    assert "no-new-privileges" in host_config["SecurityOpt"]


def test_a_non_root_process_has_no_capability_even_under_dockers_default_set(
    client, runtime_image, roots: Roots
):
    """Why dropping them all costs a stage nothing: a non-root process has none to use."""
    spec = dataclasses.replace(
        build_spec(StageCall("infer", "runtime"), runtime_image, roots, uid=4321, gid=4321),
        cap_drop=(),
    )
    seen, _ = inside(client, spec)
    assert seen["uid"] == 4321
    assert int(seen["CapEff"], 16) == 0
    assert int(seen["CapBnd"], 16) != 0  # Docker's default set, which --cap-drop ALL empties


def test_running_out_of_memory_is_an_error_naming_the_limit(client, runtime_image, roots: Roots):
    token = uuid.uuid4().hex
    spec = build_spec(StageCall("infer", "runtime"), runtime_image, roots, memory_limit="64m")
    # 512 MB written byte by byte (b"x" * n), so every page is really used.
    code = "print('allocating', flush=True); x = b'x' * (512 << 20); print('not reached')"
    out = io.BytesIO()
    with pytest.raises(PcbError) as error:
        docker_executor.run_spec(python_spec(spec, code, token), client, out)
    message = str(error.value)
    assert "stage infer ran out of memory and was killed (exit status 137)" in message
    assert "64 MiB (64m)" in message and "memory_limit" in message
    assert b"allocating" in out.getvalue() and b"not reached" not in out.getvalue()
    assert leftovers(client, token) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a root caller's case")
def test_a_root_callers_stage_writes_into_root_owned_results(client, runtime_image, tmp_path):
    """CI as root on a fresh clone: results/ and an older run's files are root's (mode 755);
    the stage, running as uid 1000, still writes its outputs, and they are 1000's."""
    from tiny_model import make_tiny_model

    data, results = tmp_path / "data", tmp_path / "results"
    data.mkdir()
    run_dir = results / "run"
    make_tiny_model(run_dir / "model" / "pcb.onnx")
    (run_dir / ".pcb.lock").write_text("{}")  # left by an older run as root, mode 644
    call = StageCall(
        "perf",
        "runtime",
        ("--run", run_dir, "--batch-sizes", "1", "--warmup", "0", "--iterations", "1", "--quiet"),
    )
    out = io.BytesIO()
    spec = docker_executor.run_in_container(
        call, data_dir=data, results_dir=results, image=runtime_image, client=client, output=out
    )
    assert spec.user == "1000:1000"
    written = run_dir / "perf" / "onnxruntime.json"
    assert written.is_file(), out.getvalue().decode()
    assert (written.stat().st_uid, written.stat().st_gid) == (1000, 1000)
    assert (run_dir / ".pcb.lock").stat().st_uid == 1000
    assert data.stat().st_uid == 0  # read-only for this stage: not handed over


def test_docker_run_line_runs(runtime_image, roots: Roots):
    call = StageCall("report", "runtime", ("--help",))
    line = docker_executor.docker_run_command(call, data_dir=roots.data, results_dir=roots.results)
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
    result = subprocess.run(
        [docker, *line.split()[1:]], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: pcb report" in result.stdout


# ---- the image itself --------------------------------------------------------------------------


def test_image_holds_no_build_time_ca_or_pip_config(client, runtime_image, tmp_path: Path):
    """Every layer of the final image (`docker save`), not just the merged file system: a file
    deleted in a later layer would still be in an earlier one."""
    archive = tmp_path / "image.tar"
    with archive.open("wb") as stream:
        for chunk in client.images.get(runtime_image).save(named=False):
            stream.write(chunk)
    found = []
    with tarfile.open(archive) as outer:
        layers = [
            m
            for m in outer.getmembers()
            if m.name.endswith("layer.tar") or (m.isfile() and m.name.startswith("blobs/"))
        ]
        assert layers
        for member in layers:
            with tarfile.open(fileobj=outer.extractfile(member)) as layer:
                for name in layer.getnames():
                    base = name.rsplit("/", 1)[-1]
                    if "build-ca" in name or base in {"pip.conf", "pip.ini", "ca.crt"}:
                        found.append(name)
    assert found == []
    labels = client.images.get(runtime_image).labels
    assert labels["pcb.image"] == "runtime"
    assert labels["pcb.lock.sha256"] == images.file_sha256(
        images.PROJECT_ROOT / "docker/runtime/requirements.lock"
    )
    assert labels["org.opencontainers.image.revision"]
    assert labels["pcb.content-tag"].startswith("pcb-runtime:")


def test_image_runs_as_non_root_by_default(client, runtime_image):
    output = client.containers.run(runtime_image, entrypoint=["id", "-u"], remove=True)
    assert output.strip() != b"0"


def freeze(client, reference: str) -> str:
    return client.containers.run(
        reference,
        entrypoint=["python", "-m", "pip", "freeze", "--all"],
        remove=True,
        network_mode="none",
    ).decode()


def test_rebuild_gives_same_packages_and_tag(client, runtime_image):
    """Build the runtime image again from scratch (no layer cache): same content tag, same
    `pip freeze`."""
    base = BaseRecipe().tag
    from docker.errors import ImageNotFound

    try:
        client.images.get(base)
    except ImageNotFound:
        pytest.skip(f"offline base {base} not here: `invoke base-image` first")
    ca = HOST_CA if HOST_CA.is_file() else None
    first = images.build_image("runtime", client=client, base_image=base, ca_bundle=ca, quiet=True)
    assert client.images.get(first.tag).labels["pcb.content-tag"] == first.tag
    before = freeze(client, first.image_id)
    second = images.build_image(
        "runtime",
        client=client,
        base_image=base,
        ca_bundle=ca,
        quiet=True,
        force=True,
        nocache=True,
    )
    try:
        assert second.built is True
        assert second.tag == first.tag
        assert freeze(client, second.image_id) == before
        assert "numpy==" in before and "pcb-bench" in before
    finally:
        # leave the first build tagged as it was
        client.api.tag(first.image_id, *first.tag.split(":"))
        client.api.tag(first.image_id, "pcb-runtime", "latest")
        if second.image_id != first.image_id:
            with contextlib.suppress(Exception):
                client.images.remove(second.image_id, force=True)
