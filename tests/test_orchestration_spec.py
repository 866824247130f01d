"""Container specs, without Docker: mounts, path rewriting, user, network, devices, GPUs,
the `docker run` line, and the pre-flight errors (with a fake client)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import docker_executor
from pcb.orchestration.spec import (
    BASE_ENVIRONMENT,
    NPU_DCMI,
    NPU_DRIVER,
    ContainerSpec,
    Mount,
    Roots,
    build_spec,
    container_path,
    gpu_request,
    npu_host,
)
from pcb.orchestration.stage import StageCall


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    (tmp_path / "data").mkdir()
    (tmp_path / "results").mkdir()
    return Roots.of(tmp_path / "data", tmp_path / "results")


def fake_ascend_host(root: Path, ids=(0,), smi="/usr/local/bin/npu-smi", dcmi=True) -> Path:
    (root / "dev").mkdir(parents=True, exist_ok=True)
    for name in [f"davinci{i}" for i in ids] + ["davinci_manager", "devmm_svm", "hisi_hdc"]:
        (root / "dev" / name).touch()
    (root / NPU_DRIVER.lstrip("/")).mkdir(parents=True)
    if dcmi:
        (root / NPU_DCMI.lstrip("/")).mkdir(parents=True)
    if smi:
        path = root / smi.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


# ---- mounts, paths, user, network --------------------------------------------------------------


def test_data_read_only_results_read_write(roots: Roots):
    call = StageCall(
        "preprocess", "runtime", ("--dataset", roots.data / "M", "--run", roots.results / "r")
    )
    spec = build_spec(call, "pcb-runtime:latest", roots, uid=1234, gid=567)
    assert spec.mounts[:2] == (
        Mount(str(roots.data), "/data", read_only=True),
        Mount(str(roots.results), "/results", read_only=False),
    )
    assert spec.command == ("preprocess", "--dataset", "/data/M", "--run", "/results/r")
    assert spec.user == "1234:567"
    assert spec.network == "none"
    assert spec.image == "pcb-runtime:latest"
    assert spec.workdir == "/work"
    assert spec.init is True
    assert spec.devices == () and spec.gpus is None


def test_demo_data_writes_data(roots: Roots):
    call = StageCall("demo-data", "export", ("--out", roots.data / "demo"), writes_data=True)
    spec = build_spec(call, "img", roots)
    assert spec.mounts[0] == Mount(str(roots.data), "/data", read_only=False)
    assert spec.command == ("demo-data", "--out", "/data/demo")


def test_user_defaults_to_the_caller(roots: Roots, monkeypatch: pytest.MonkeyPatch):
    # A caller who is not root (root's containers run as another: tests/test_container_users.py).
    monkeypatch.setattr(os, "getuid", lambda: 4321)
    monkeypatch.setattr(os, "getgid", lambda: 4322)
    spec = build_spec(StageCall("report", "runtime"), "img", roots)
    assert spec.user == "4321:4322"


def test_network_only_when_asked(roots: Roots):
    call = StageCall("report", "runtime", needs_network=True)
    assert build_spec(call, "img", roots).network == "bridge"


def test_relative_paths_resolve_against_the_working_directory(
    roots: Roots, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(roots.data.parent)
    call = StageCall(
        "export", "export", ("--checkpoint", Path("data/PCB.pt"), "--run", Path("results/demo"))
    )
    spec = build_spec(call, "img", roots)
    assert spec.command == ("export", "--checkpoint", "/data/PCB.pt", "--run", "/results/demo")


def test_strings_pass_unchanged_and_roots_map_to_mount_points(roots: Roots):
    call = StageCall("perf", "runtime", ("--batch-sizes", "1,4", "--run", roots.results))
    assert build_spec(call, "img", roots).command == (
        "perf",
        "--batch-sizes",
        "1,4",
        "--run",
        "/results",
    )


def test_path_outside_the_mounts_is_refused(roots: Roots, tmp_path: Path):
    call = StageCall("export", "export", ("--checkpoint", tmp_path / "elsewhere" / "x.pt"))
    with pytest.raises(PcbError, match=r"stage export: the path .*x\.pt .* outside the folders"):
        build_spec(call, "img", roots)


def test_dotdot_escape_is_refused(roots: Roots):
    with pytest.raises(PcbError, match="outside the folders"):
        container_path(roots.data / ".." / "secret", roots)


def test_symlinked_data_folder(tmp_path: Path):
    real = tmp_path / "disk" / "market"
    real.mkdir(parents=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "data").symlink_to(real)
    roots = Roots.of(tmp_path / "data", tmp_path / "results")
    assert roots.data == real
    assert container_path(tmp_path / "data" / "q", roots) == "/data/q"


def test_environment(roots: Roots):
    call = StageCall("infer", "runtime", env={"OMP_NUM_THREADS": "2", "HOME": "/x"})
    env = build_spec(call, "img", roots).environment
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["HOME"] == "/x"
    assert env["PYTHONUNBUFFERED"] == BASE_ENVIRONMENT["PYTHONUNBUFFERED"]


def test_create_kwargs(roots: Roots):
    call = StageCall("report", "runtime", ("--run", roots.results / "demo"))
    kwargs = build_spec(call, "pcb-runtime:latest", roots, uid=1, gid=2).create_kwargs()
    assert kwargs["image"] == "pcb-runtime:latest"
    assert kwargs["command"] == ["report", "--run", "/results/demo"]
    assert kwargs["user"] == "1:2"
    assert kwargs["network_mode"] == "none"
    assert kwargs["detach"] is True
    assert kwargs["labels"] == {
        "pcb.stage": "report",
        "pcb.image": "runtime",
        "pcb.run": str(roots.results / "demo"),
        "pcb.checkout": str(Path(__file__).resolve().parents[1]),
    }
    [data, results] = kwargs["mounts"]
    assert (data["Target"], data["Source"], data["ReadOnly"], data["Type"]) == (
        "/data",
        str(roots.data),
        True,
        "bind",
    )
    assert (results["Target"], results["ReadOnly"]) == ("/results", False)
    assert "devices" not in kwargs and "device_requests" not in kwargs


# ---- NPU ---------------------------------------------------------------------------------------


def test_npu_device_0(tmp_path: Path, roots: Roots):
    host = fake_ascend_host(tmp_path / "host", ids=(0,))
    call = StageCall("infer", "cann", npu_devices=(0,))
    spec = build_spec(call, "pcb-cann:latest", roots, uid=0, gid=0, host_root=host)
    assert spec.devices == (
        "/dev/davinci0",
        "/dev/davinci_manager",
        "/dev/devmm_svm",
        "/dev/hisi_hdc",
    )
    assert spec.mounts[2:] == (
        Mount("/usr/local/Ascend/driver", "/usr/local/Ascend/driver", read_only=True),
        Mount("/usr/local/dcmi", "/usr/local/dcmi", read_only=True),
        Mount("/usr/local/bin/npu-smi", "/usr/local/bin/npu-smi", read_only=True),
    )
    assert spec.create_kwargs()["devices"][0] == "/dev/davinci0:/dev/davinci0:rwm"
    assert spec.environment["ASCEND_PROCESS_LOG_PATH"] == "/tmp/ascend-log"


def test_npu_devices_0_to_3_with_sbin_npu_smi(tmp_path: Path, roots: Roots):
    host = fake_ascend_host(tmp_path / "host", ids=(0, 1, 2, 3), smi="/usr/local/sbin/npu-smi")
    call = StageCall("perf", "cann", npu_devices=(3, 0, 2, 1))
    spec = build_spec(call, "img", roots, uid=0, gid=0, host_root=host)
    assert spec.devices == (
        "/dev/davinci0",
        "/dev/davinci1",
        "/dev/davinci2",
        "/dev/davinci3",
        "/dev/davinci_manager",
        "/dev/devmm_svm",
        "/dev/hisi_hdc",
    )
    assert Mount("/usr/local/sbin/npu-smi", "/usr/local/bin/npu-smi", True) in spec.mounts
    line = spec.to_docker_run()
    for n in range(4):
        assert f"--device /dev/davinci{n} " in line
    assert "-v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro" in line
    assert "-v /usr/local/dcmi:/usr/local/dcmi:ro" in line
    assert "-v /usr/local/sbin/npu-smi:/usr/local/bin/npu-smi:ro" in line


def test_npu_non_root_gets_the_device_group(tmp_path: Path, roots: Roots):
    host = fake_ascend_host(tmp_path / "host")
    gid = (host / "dev" / "davinci_manager").stat().st_gid
    spec = build_spec(
        StageCall("infer", "cann", npu_devices=(0,)),
        "img",
        roots,
        uid=4321,
        gid=gid + 1,
        host_root=host,
    )
    assert spec.group_add == (str(gid),)
    assert f"--group-add {gid}" in spec.to_docker_run()


def test_npu_missing_host_files_are_named(tmp_path: Path, roots: Roots):
    host = fake_ascend_host(tmp_path / "host", ids=(0,), dcmi=False, smi=None)
    call = StageCall("infer", "cann", npu_devices=(0, 1))
    with pytest.raises(PcbError, match=r"missing: /dev/davinci1\. Install the Ascend driver"):
        build_spec(call, "img", roots, host_root=host)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PcbError) as error:
        build_spec(call, "img", roots, host_root=empty)
    for name in ("/dev/davinci0", "/dev/davinci_manager", "/dev/hisi_hdc", NPU_DRIVER):
        assert name in str(error.value)
    # dcmi and npu-smi are optional: mounted when present
    assert npu_host((0,), host).mounts == (Mount(NPU_DRIVER, NPU_DRIVER, True),)


def test_npu_print_needs_no_ascend_host(roots: Roots, tmp_path: Path):
    call = StageCall("infer", "cann", ("--run", roots.results / "r"), npu_devices=(1,))
    line = docker_executor.docker_run_command(
        call, data_dir=roots.data, results_dir=roots.results, host_root=tmp_path
    )
    assert "--device /dev/davinci1" in line and "pcb-cann:latest" in line


@pytest.mark.parametrize("bad", [(), (-1,), ("0",), (True,)])
def test_npu_bad_ids(bad):
    with pytest.raises(PcbError):
        npu_host(bad)


# ---- GPU ---------------------------------------------------------------------------------------


def test_gpu_all(roots: Roots):
    spec = build_spec(StageCall("perf", "tensorrt", gpus=-1), "img", roots)
    [request] = spec.create_kwargs()["device_requests"]
    assert request["Count"] == -1
    assert request["Capabilities"] == [["gpu"]]
    assert "--gpus all" in spec.to_docker_run()


def test_gpu_count_and_ids(roots: Roots):
    assert gpu_request(2).to_cli() == "2"
    spec = build_spec(StageCall("perf", "tensorrt", gpus=("0", "2")), "img", roots)
    [request] = spec.create_kwargs()["device_requests"]
    assert request["DeviceIDs"] == ["0", "2"]
    assert request["Capabilities"] == [["gpu"]]
    assert "--gpus '\"device=0,2\"'" in spec.to_docker_run()
    argv = shlex.split(spec.to_docker_run())
    assert argv[argv.index("--gpus") + 1] == '"device=0,2"'


@pytest.mark.parametrize("bad", [0, -2, True, ()])
def test_gpu_bad_selection(bad):
    with pytest.raises(PcbError):
        gpu_request(bad)


# ---- docker run line ---------------------------------------------------------------------------


def test_to_docker_run(roots: Roots):
    call = StageCall(
        "preprocess",
        "runtime",
        ("--dataset", roots.data / "a b", "--run", roots.results / "demo", "--quiet"),
    )
    spec = build_spec(call, "pcb-runtime:latest", roots, uid=1000, gid=1000)
    line = spec.to_docker_run()
    assert line.startswith("docker run --rm --init --user 1000:1000 --network none ")
    assert f"-v {roots.data}:/data:ro -v {roots.results}:/results " in line
    assert line.endswith(
        "-w /work pcb-runtime:latest preprocess --dataset '/data/a b' --run /results/demo --quiet"
    )
    assert shlex.split(line)[-6:] == [
        "preprocess",
        "--dataset",
        "/data/a b",
        "--run",
        "/results/demo",
        "--quiet",
    ]


def test_entrypoint_override():
    spec = ContainerSpec("img", ("-c", "print(1)"), entrypoint=("python", "-u"))
    assert spec.create_kwargs()["entrypoint"] == ["python", "-u"]
    assert spec.to_docker_run().endswith("--entrypoint python -w /work img -u -c 'print(1)'")


def test_spec_is_a_plain_record():
    spec = ContainerSpec("img", ("report",))
    assert spec.network == "none" and spec.to_docker_run().endswith("-w /work img report")


# ---- pre-flight, with a fake client -------------------------------------------------------------


class FakeImage:
    def __init__(self, labels=None):
        self.labels = labels or {}
        self.id = "sha256:feed"


class FakeImages:
    def __init__(self, present):
        self.present = present

    def get(self, reference):
        from docker.errors import ImageNotFound

        if reference not in self.present:
            raise ImageNotFound(f"No such image: {reference}")
        return self.present[reference]


class FakeClient:
    def __init__(self, images=(), runtimes=None):
        self.images = FakeImages({ref: FakeImage() for ref in images})
        self.runtimes = runtimes or {"runc": {}}
        self.created = []

    def info(self):
        return {"Runtimes": self.runtimes}

    @property
    def containers(self):  # pre-flight failures must not get this far
        raise AssertionError("a container was about to be created")


def test_daemon_unreachable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(PcbError) as error:
        docker_executor.connect(timeout=2)
    message = str(error.value)
    assert "cannot reach the Docker engine at unix:///nonexistent/docker.sock" in message
    assert "systemctl start docker" in message and "scripts/setup-docker" in message
    assert "--local" in message


def test_image_missing_offers_the_build_task(roots: Roots):
    call = StageCall("report", "runtime", ("--run", roots.results / "r"))
    with pytest.raises(
        PcbError,
        match=r"pcb-runtime:latest is not on this machine: build it with "
        r"`invoke build --image runtime`.*invoke base-image",
    ):
        docker_executor.run_in_container(
            call, data_dir=roots.data, results_dir=roots.results, client=FakeClient()
        )


def test_npu_preflight_before_any_container(roots: Roots, tmp_path: Path):
    client = FakeClient(images=["pcb-cann:latest"])
    call = StageCall("infer", "cann", npu_devices=(0,))
    with pytest.raises(PcbError, match="/dev/davinci0"):
        docker_executor.run_in_container(
            call, data_dir=roots.data, results_dir=roots.results, client=client, host_root=tmp_path
        )


def test_gpu_runtime_missing(roots: Roots, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(docker_executor.shutil, "which", lambda name: None)
    client = FakeClient(images=["pcb-tensorrt:latest"])
    call = StageCall("perf", "tensorrt", gpus=-1)
    with pytest.raises(PcbError, match=r"no NVIDIA runtime: install .* NVIDIA Container Toolkit"):
        docker_executor.run_in_container(
            call, data_dir=roots.data, results_dir=roots.results, client=client
        )
    assert docker_executor.gpu_runtime_available(FakeClient(runtimes={"nvidia": {}}))


def test_stale_image_warns(capsys: pytest.CaptureFixture[str]):
    client = FakeClient()
    client.images.present["pcb-runtime:latest"] = FakeImage({"pcb.sources.sha256": "0" * 64})
    docker_executor.check_image(client, "pcb-runtime:latest", "runtime")
    assert "built from other pcb sources" in capsys.readouterr().err


def test_failed_stage_raises_with_name_and_status(roots: Roots, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(docker_executor, "run_spec", lambda spec, client, output=None: 3)
    monkeypatch.setattr(docker_executor, "remove_orphans", lambda client, checkout: [])
    client = FakeClient(images=["pcb-runtime:latest"])
    call = StageCall("evaluate", "runtime")
    with pytest.raises(
        PcbError,
        match=r"stage evaluate failed in its container \(pcb-runtime:latest\) "
        r"with exit status 3; run it by hand with:\n  docker run",
    ):
        docker_executor.run_in_container(
            call, data_dir=roots.data, results_dir=roots.results, client=client
        )


def test_unknown_executor():
    from pcb.orchestration.settings import settings_from_config

    with pytest.raises(PcbError, match=r"pcb.executor = 'k8s': expected one of"):
        settings_from_config({"executor": "k8s"})


def test_run_spec_removes_the_container_on_interrupt():
    events = []

    class Container:
        id = "c0ffee"

        def start(self):
            events.append("start")

        def logs(self, stream, follow):
            yield b"line 1\n"
            raise KeyboardInterrupt

        def wait(self):
            raise AssertionError("not reached")

        def remove(self, force):
            events.append(("remove", force))

    class Containers:
        def create(self, **kwargs):
            events.append("create")
            return Container()

    class Client:
        containers = Containers()

    import io

    out = io.BytesIO()
    with pytest.raises(KeyboardInterrupt):
        docker_executor.run_spec(ContainerSpec("img", ("report",)), Client(), out)
    assert events == ["create", "start", ("remove", True)]
    assert out.getvalue() == b"line 1\n"
