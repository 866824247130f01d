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
def client():
    try:
        return docker_executor.connect(timeout=30)
    except PcbError as error:
        pytest.skip(f"no Docker engine: {error}")


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
    expected_uid = os.getuid() if uid is None else uid
    expected_gid = os.getgid() if gid is None else gid
    assert (written.st_uid, written.st_gid) == (expected_uid, expected_gid)


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
