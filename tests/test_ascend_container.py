"""The whole `--chip` path in real containers, the Ascend tools doubled (marked `docker`).

A test image made FROM pcb-runtime:latest adds the doubles of tests/doubles/ascend on the PATH
(through a stand-in toolkit set_env.sh that the cann image's own `with-cann` entry point
sources), and the pcb sources of this checkout. Every stage of `invoke full --chip 310P3
--devices 0,1` but export (a tiny model stands in) runs in it, from the same StageCalls and
container specs as a real run; the host's Ascend files come from a fake host root, so the
executor's pre-flight passes, and each NPU device node is /dev/null mapped to /dev/davinci<N>,
which the ais_bench double checks for. The pipeline must find the dumps, evaluate them, compare
them with onnxruntime's and report the throughput with no manual step.

Needs a running engine and pcb-runtime:latest (`invoke build --image runtime`); about 30 s.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest
from ascend_helpers import DOUBLES, fixture_path, tiny_chip_settings
from image_helpers import built_image

from pcb.orchestration import docker_executor
from pcb.orchestration.docker_executor import container_spec
from pcb.orchestration.pipeline import full_pipeline
from pcb.orchestration.preflight import check_npu_hosts
from pcb.orchestration.spec import NPU_DCMI, NPU_DRIVER, ContainerSpec
from pcb.orchestration.stage import StageCall

pytestmark = pytest.mark.docker

PROJECT = Path(__file__).resolve().parents[1]
BASE = "pcb-runtime:latest"
TABLE = "npu_smi_310P3_duo.txt"  # one Atlas 300I Duo: devices 0 and 1 on card 2

DOCKERFILE = f"""\
FROM {BASE}
USER root
COPY pcb/ /opt/pcb-src/pcb/
COPY ascend-doubles/ /opt/ascend-doubles/
COPY with-cann /usr/local/bin/with-cann
RUN mkdir -p /usr/local/Ascend/ascend-toolkit \\
 && cp /opt/ascend-doubles/set_env.sh /usr/local/Ascend/ascend-toolkit/set_env.sh \\
 && chmod -R a+rX /opt/pcb-src /opt/ascend-doubles /usr/local/Ascend \\
 && chmod a+rx /usr/local/bin/with-cann /opt/ascend-doubles/bin/*
ENV PYTHONPATH=/opt/pcb-src \\
    NPU_SMI_DOUBLE_TABLE=/opt/ascend-doubles/{TABLE} \\
    PCB_DOUBLE_CHECK_DEVICES=1
USER pcb
ENTRYPOINT ["/usr/local/bin/with-cann", "python", "-m", "pcb"]
LABEL pcb.sources.sha256="{{sources}}"
"""


def _context() -> dict[str, tuple[bytes, int]]:
    from pcb.orchestration.images import sources_digest

    # The executor warns about an image built from other sources: this one has these.
    dockerfile = DOCKERFILE.replace("{sources}", sources_digest(PROJECT))
    files: dict[str, tuple[bytes, int]] = {"Dockerfile": (dockerfile.encode(), 0o644)}
    for path in sorted((PROJECT / "pcb").rglob("*.py")):
        files[f"pcb/{path.relative_to(PROJECT / 'pcb').as_posix()}"] = (path.read_bytes(), 0o644)
    for path in sorted(DOUBLES.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            mode = 0o755 if path.parent.name == "bin" else 0o644
            files[f"ascend-doubles/{path.relative_to(DOUBLES).as_posix()}"] = (
                path.read_bytes(),
                mode,
            )
    files[f"ascend-doubles/{TABLE}"] = (fixture_path(TABLE).read_bytes(), 0o644)
    files["with-cann"] = ((PROJECT / "docker" / "cann" / "with-cann").read_bytes(), 0o755)
    return files


def _tar(files: dict[str, tuple[bytes, int]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="module")
def client(docker_client):
    return docker_client


def double_image(client) -> str:
    """pcb-runtime with this checkout's pcb and the Ascend doubles, built unless an image of
    these very files on this base is there (its tag is their digest)."""
    from docker.errors import ImageNotFound

    try:
        base = client.images.get(BASE)
    except ImageNotFound:
        pytest.skip(f"{BASE} is not built: `invoke build --image runtime` first")
    files = _context()
    digest = hashlib.sha256(base.id.encode())
    for name, (data, mode) in sorted(files.items()):
        digest.update(f"{name}\0{mode:o}\0".encode() + hashlib.sha256(data).digest())
    return built_image(client, f"pcb-test-ascend:{digest.hexdigest()[:12]}", _tar(files))


@pytest.fixture(scope="module")
def image(client) -> str:
    tag = double_image(client)
    # Earlier test images (other sources) are of no further use.
    for old in client.images.list(name="pcb-test-ascend"):
        for reference in old.tags:
            if reference != tag:
                client.images.remove(reference, noprune=False)
    return tag


def fake_host(root: Path) -> Path:
    """An Ascend host's files as the executor looks for them: device nodes, driver, dcmi, and
    npu-smi in /usr/local/sbin (the npu-smi double, mounted as the real one would be)."""
    for name in ("davinci0", "davinci1", "davinci_manager", "devmm_svm", "hisi_hdc"):
        (root / "dev").mkdir(parents=True, exist_ok=True)
        (root / "dev" / name).touch()
    for folder in (NPU_DRIVER, NPU_DCMI):
        (root / folder.lstrip("/")).mkdir(parents=True)
    smi = root / "usr/local/sbin/npu-smi"
    smi.parent.mkdir(parents=True)
    shutil.copy(DOUBLES / "bin" / "npu-smi", smi)
    smi.chmod(0o755)
    return root


def run_call(client, call: StageCall, spec: ContainerSpec, host: Path, token: str) -> str:
    """Run a stage's spec as the executor would, but with the host's Ascend files taken from
    the fake host root and each device node backed by /dev/null."""
    from docker.types import Mount

    kwargs = spec.create_kwargs()
    kwargs["devices"] = [f"/dev/null:{device}:rwm" for device in spec.devices]
    kwargs["mounts"] = kwargs["mounts"][:2] + [
        Mount(m.target, str(host / m.source.lstrip("/")), type="bind", read_only=m.read_only)
        for m in spec.mounts[2:]
    ]
    kwargs["labels"] = {**kwargs["labels"], "pcb.test": token}
    container = client.containers.create(**kwargs)
    try:
        container.start()
        output = b"".join(container.logs(stream=True, follow=True)).decode(errors="replace")
        status = int(container.wait().get("StatusCode", 1))
    finally:
        container.remove(force=True)
    assert status == 0, f"stage {call.stage} failed ({status}):\n{output}"
    return output


def test_chip_pipeline_in_containers(client, image, tmp_path: Path):
    from tiny_model import make_tiny_model

    settings = tiny_chip_settings(tmp_path, devices="0,1", run="npu")
    data, results = settings.data_dir, settings.results_dir
    host = fake_host(tmp_path / "host")
    make_tiny_model(settings.run_dir / "model" / "pcb.onnx")
    calls = [c for c in full_pipeline(settings) if c.stage != "export"]
    check_npu_hosts(calls, host_root=host)  # the pre-flight passes on the (fake) Ascend host
    token = uuid.uuid4().hex
    outputs = {}
    for call in calls:
        if call.stage == "report":
            call = StageCall(call.stage, call.image, (*call.args, "--no-plots"))
        spec = container_spec(call, data_dir=data, results_dir=results, image=image, host_root=host)
        docker_executor.preflight(call, client, image, host)
        docker_executor.prepare_folders(call, spec)  # writable for a root caller's container uid
        if call.image == "cann" and call.npu_devices:
            assert "/dev/davinci0" in spec.devices
            assert any(m.target == "/usr/local/bin/npu-smi" for m in spec.mounts)
        outputs[(call.stage, call.image)] = run_call(client, call, spec, host, token)
    assert client.containers.list(all=True, filters={"label": f"pcb.test={token}"}) == []

    run = settings.run_dir
    npu = "Ascend310P3-ais_bench"
    # ais_bench's timestamped folders are gone; one dump per image is where evaluate reads.
    for split in ("query", "gallery"):
        listed = (run / "bins" / f"{split}.info").read_text().split("\n")
        count = len([line for line in listed if line.strip()])
        assert len(list((run / "dumps" / npu / split).glob("*_0.bin"))) == count
    assert not (run / "dumps" / npu / ".ais_bench").exists()
    assert "ATC run success" in (run / "logs" / "convert" / "pcb_bs4" / "atc.out").read_text()

    report = json.loads((run / "comparison.json").read_text())
    accuracy = report["accuracy"][npu]
    assert accuracy["num_query"] == report["accuracy"]["onnxruntime"]["num_query"] > 0
    assert accuracy["parity"]["cos_min"] > 0.999 and accuracy["parity"]["top1_verdict"] == "PASS"
    assert accuracy["reference"]["passed"] is True
    card = report["throughput"]["Ascend310P3"]
    assert card["class"] == "NPU" and card["scope"] == "card"  # npu-smi, mounted, was read
    assert card["tool"] == "ais_bench" and card["tool_version"] == "0.0.0+double"
    perf = json.loads((run / "perf" / f"{npu}.json").read_text())["records"]
    assert [(r["platform"], r["batch_size"]) for r in perf] == [
        ("Ascend310P3-dev0", 1),
        ("Ascend310P3-dev1", 1),
        ("Ascend310P3", 1),
        ("Ascend310P3-dev0", 2),
        ("Ascend310P3-dev1", 2),
        ("Ascend310P3", 2),
    ]
    assert perf[2]["extra"]["card"] == 2 and perf[2]["extra"]["npu_smi"] == "read"
