"""The `--trt` perf path in a real container (marked `docker`), without a GPU.

A test image FROM pcb-runtime:latest gets the trtexec double of tests/doubles/tensorrt on its
PATH and this checkout's pcb sources; the trt-perf StageCall of the plan then runs in it
through the executor (gpus=None: no GPU here), exactly as `invoke trt` would run it in the
tensorrt image, and the PerfRecords and engines it writes are checked from the host. Skipped,
saying why, without a Docker engine or the runtime image (`invoke build --image runtime`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from image_helpers import built_image

from pcb.cli.options import stage_option
from pcb.errors import PcbError
from pcb.layout import RunLayout
from pcb.orchestration import docker_executor, images
from pcb.orchestration.pipeline import trt_calls
from pcb.orchestration.settings import settings_from_config
from pcb.orchestration.stage import with_options
from pcb.perf import read_perf_records
from pcb.tensorrt.engine_cache import engine_path, read_record

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
DOUBLE = ROOT / "tests" / "doubles" / "tensorrt" / "trtexec"
# The double takes the options of its version's real --help: 10.0.1's goes in with it.
HELP = ROOT / "tests" / "fixtures" / "real" / "trtexec" / "help_trt10_0_1.txt"
RUNTIME = images.IMAGES["runtime"].latest


def _entry_module() -> str:
    """`pcb`, whose parser registers the trt-* commands (the old pcb.tensorrt otherwise)."""
    import argparse

    from pcb.cli.parser import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction) and "trt-perf" in action.choices:
            return "pcb"
    return "pcb.tensorrt"


DOCKERFILE = f"""\
FROM {RUNTIME}
USER root
COPY trtexec /usr/local/bin/trtexec
COPY help_trt10_0_1.txt /opt/trtexec-fixtures/help_trt10_0_1.txt
COPY pcb/ /opt/pcb-src/pcb/
RUN chmod 0755 /usr/local/bin/trtexec && chmod -R a+rX /opt/pcb-src
# This checkout's pcb ahead of the image's installed copy (which may predate pcb.tensorrt).
ENV PYTHONPATH=/opt/pcb-src TRTEXEC_DOUBLE_FIXTURES=/opt/trtexec-fixtures
USER pcb
# python -m pcb once the trt-* commands are wired into it; until then pcb.tensorrt's own
# entry point, which has the same sub-commands.
ENTRYPOINT ["python", "-m", "{_entry_module()}"]
"""


def _context() -> tuple[bytes, str]:
    files = {
        "Dockerfile": (DOCKERFILE.encode(), 0o644),
        "trtexec": (DOUBLE.read_bytes(), 0o755),
        HELP.name: (HELP.read_bytes(), 0o644),
    }
    for path in sorted((ROOT / "pcb").rglob("*.py")):
        files[path.relative_to(ROOT).as_posix()] = (path.read_bytes(), 0o644)
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in sorted(files.items()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), digest.hexdigest()[:12]


@pytest.fixture(scope="module")
def client(docker_client):
    return docker_client


def trtexec_double_image(client) -> str:
    """pcb-runtime with this checkout's pcb and the trtexec double, built unless an image of
    these very files on this base is there (its tag is their digest)."""
    from docker.errors import ImageNotFound

    try:
        base_id = client.images.get(RUNTIME).id
    except ImageNotFound:
        pytest.skip(f"{RUNTIME} is not built: `invoke build --image runtime` first")
    context, digest = _context()
    tag = f"pcb-test-trtexec-double:{hashlib.sha256((digest + base_id).encode()).hexdigest()[:12]}"
    return built_image(client, tag, io.BytesIO(context))


@pytest.fixture(scope="module")
def double_image(client) -> str:
    return trtexec_double_image(client)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    data, results = tmp_path / "data", tmp_path / "results"
    for folder in (data, results):
        folder.mkdir()
        folder.chmod(0o777)  # the container's uid may differ from the test's
    model = results / "market" / "model"
    model.mkdir(parents=True)
    (model / "pcb.onnx").write_bytes(b"stand-in onnx: the double only checks it exists")
    for folder in (results / "market", model):
        folder.chmod(0o777)
    return data, results


def run(client, image: str, call, data: Path, results: Path, uid: int | None = None) -> str:
    out = io.BytesIO()
    try:
        docker_executor.run_in_container(
            call,
            data_dir=data,
            results_dir=results,
            image=image,
            client=client,
            output=out,
            uid=uid,
        )
    except PcbError as error:
        raise PcbError(f"{error}\ncontainer output:\n{out.getvalue().decode()}") from None
    return out.getvalue().decode(errors="replace")


def test_trt_perf_in_a_container_with_the_trtexec_double(client, double_image, folders):
    data, results = folders
    settings = settings_from_config(
        {"data_dir": data, "results_dir": results, "run": "market"},
        trt_batch_sizes=(1, 16, 64),
        quiet=True,
    )
    [call] = trt_calls(settings, accuracy=False)
    call = with_options(call, {stage_option("trt-perf", "duration"): 1})
    assert call.stage == "trt-perf" and call.gpus == -1
    # No GPU on this machine: the same call without the GPU request (the double needs none).
    call = dataclasses.replace(call, gpus=None)

    log = run(client, double_image, call, data, results, uid=1000)
    assert "T4-trt-fp16 on Tesla T4, TensorRT 10.0.1" in log
    perf_file = results / "market" / "perf" / "tensorrt-fp16.json"
    records = read_perf_records(perf_file)
    assert [r.batch_size for r in records] == [1, 16, 64]
    for record in records:
        assert (record.platform, record.backend, record.tool) == (
            "T4-trt-fp16",
            "tensorrt",
            "trtexec",
        )
        assert (record.scope, record.tool_version, record.device) == ("gpu", "10.0.1", "Tesla T4")
        assert record.images_per_s == pytest.approx(
            1000 * record.batch_size / record.latency.mean_ms
        )
        assert record.extra["cross_check"]["status"] == "ok"
        # figures from trtexec's JSON, written into the results folder by the container
        assert record.extra["timing_source"] == "exportTimes"
        assert record.extra["json_vs_printed"]["status"] == "ok"
        assert record.extra["engine_reused"] is False
        # paths as the container saw them
        assert record.extra["engine"].startswith("/results/market/engines/tensorrt/fp16/")
    layout_root = results / "market"
    layout = RunLayout(layout_root)
    engine = engine_path(layout, "fp16", 64)
    assert engine.is_file() and engine.stat().st_uid == 1000  # the container's user owns it
    assert read_record(engine)["device"] == "Tesla T4"
    assert (layout_root / "perf" / "tensorrt-fp16" / "trtexec_bs64.log").is_file()
    assert (layout_root / "perf" / "tensorrt-fp16" / "trtexec_bs64.times.json").is_file()

    # Second run: every engine is reused (--loadEngine), the figures are the same.
    run(client, double_image, call, data, results, uid=1000)
    again = read_perf_records(perf_file)
    assert all(r.extra["engine_reused"] for r in again)
    assert [r.images_per_s for r in again] == pytest.approx([r.images_per_s for r in records])
    assert all("--loadEngine=" in r.extra["trtexec_command"] for r in again)


def test_a_failing_stage_reports_its_container_command(client, double_image, folders):
    data, results = folders
    settings = settings_from_config(
        {"data_dir": data, "results_dir": results, "run": "market"}, trt_precision="int8"
    )
    int8 = trt_calls(settings, accuracy=False)
    perf = dataclasses.replace(int8[-1], gpus=None)  # int8 without trt-calibrate
    with pytest.raises(
        PcbError, match=r"(?s)failed in its container .* exit status 1.*trt-calibrate"
    ):
        run(client, double_image, perf, data, results, uid=1000)
