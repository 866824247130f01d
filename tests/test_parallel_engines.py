"""Platforms in parallel on two real Docker engines (marked `docker`, `remote`, `slow`).

`invoke full --chip 310P3 --trt`'s plan, with the Ascend stages (the cann image) on the second
engine (scripts/second-engine, reached through its unix socket: the ssh:// path is
tests/test_remote_engine.py's) and everything else on this host's engine, run by the same
`commands.run_plan` a task uses. The vendor tools are the test doubles: the Ascend image is
tests/test_ascend_container.py's (atc, ais_bench, npu-smi doubles on pcb-runtime), the
TensorRT one tests/test_tensorrt_docker.py's (the trtexec double). Without a GPU TensorRT's
accuracy path (its Python runtime) cannot run in a double, so the TensorRT chain is trt-perf;
the second engine's host has no NPU, so its specs get no device nodes and the doubles are told
not to count them (what the probe test below shows the engine would say otherwise).

Asserted: the Ascend chain and the TensorRT + CPU chain overlapped in time (the manifest's
stage times, and the runner's), one report with both platforms, whose records name the host
each engine reported; a fault injected in one chain stops the other, names chain, engine and
stage, and leaves no container of this run on either engine; the re-run then continues; the
second engine's refusal of a missing device and driver folder becomes the error naming host,
stage and device before anything is sent.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from ascend_helpers import tiny_chip_settings

from pcb.errors import PcbError
from pcb.orchestration import commands, docker_executor
from pcb.orchestration.endpoints import Endpoint, client_for
from pcb.orchestration.executors import EngineRouter
from pcb.orchestration.lifecycle import labelled_containers
from pcb.orchestration.owner import LABEL_PID
from pcb.orchestration.pipeline import full_pipeline
from pcb.orchestration.remote_executor import RemoteExecutor
from pcb.orchestration.stage import StageCall

pytestmark = [pytest.mark.docker, pytest.mark.remote, pytest.mark.slow]

SOCKET = os.environ.get("PCB_ENGINE2_RUN", "/run/pcb-engine2") + "/docker.sock"
ENGINE2 = f"unix://{SOCKET}"
NPU = "Ascend310P3-ais_bench"


@pytest.fixture(scope="module")
def local(docker_client):
    return docker_client


@pytest.fixture(scope="module")
def engine2():
    if not Path(SOCKET).exists():
        pytest.skip(f"no second engine at {SOCKET}: `bash scripts/second-engine` (root)")
    try:
        return client_for(Endpoint(ENGINE2), timeout=120)
    except PcbError as error:
        pytest.skip(f"the second engine does not answer: {error}")


@pytest.fixture(scope="module")
def doubles(local) -> dict[str, str]:
    """The test-double images by family: the Ascend one serves runtime too (it is
    pcb-runtime with this checkout's pcb and the Ascend doubles)."""
    import test_ascend_container as ascend
    import test_tensorrt_docker as trt
    npu = ascend.double_image(local)
    gpu = trt.trtexec_double_image(local)
    return {"runtime": npu, "cann": npu, "tensorrt": gpu, "export": npu}


def settings_in(root: Path):
    settings = tiny_chip_settings(root, trt=True, run="both")
    return replace(settings, engines=(("cann", ENGINE2),))


def plan_calls(settings) -> list[StageCall]:
    """The plan less what cannot run here: export (a tiny model stands in), TensorRT's
    accuracy path (its Python runtime has no double), and GPUs (none here)."""
    from tiny_model import make_tiny_model

    make_tiny_model(settings.run_dir / "model" / "pcb.onnx")
    calls = []
    for call in full_pipeline(settings):
        if call.stage in ("export", "trt-infer") or "tensorrt-" in " ".join(map(str, call.args)):
            continue
        if call.gpus is not None:
            call = replace(call, gpus=None)
        if call.stage == "report":
            call = replace(call, args=(*call.args, "--no-plots"))
        calls.append(call)
    return calls


def on_engine2(settings, local, engine2) -> RemoteExecutor:
    return RemoteExecutor(
        Endpoint(ENGINE2),
        settings.data_dir,
        settings.results_dir,
        client=engine2,
        local_client=local,
    )


def router_for(settings, doubles, local, engine2, monkeypatch) -> EngineRouter:
    here = docker_executor.DockerExecutor(settings.data_dir, settings.results_dir, client=local)
    here.images.update(doubles)
    remote = on_engine2(settings, local, engine2)
    remote.local_image = here.image_for
    original = RemoteExecutor.spec

    def no_npu_host(self, call, image, memory_total=None):
        # The second engine's host has no NPU: no device nodes, no driver folder, and the
        # doubles count none (test_the_missing_device_... shows what the engine says else).
        spec = original(self, call, image, memory_total)
        mounts = tuple(m for m in spec.mounts if m.kind == "volume")
        environment = {**spec.environment, "PCB_DOUBLE_CHECK_DEVICES": "0"}
        return replace(spec, devices=(), mounts=mounts, environment=environment)

    monkeypatch.setattr(RemoteExecutor, "spec", no_npu_host)
    return EngineRouter(here, {"cann": remote})


def owned(client) -> list:
    return labelled_containers(client, f"{LABEL_PID}={os.getpid()}")


def test_two_chains_on_two_engines_run_together_and_end_in_one_report(
    tmp_path, doubles, local, engine2, monkeypatch, capsys
):
    settings = settings_in(tmp_path / "parallel")
    calls = plan_calls(settings)
    router = router_for(settings, doubles, local, engine2, monkeypatch)
    # The image is loaded into the second engine once, before the timed runs.
    from pcb.orchestration.remote_executor import ensure_image

    ensure_image(local, engine2, "cann", ENGINE2, print, doubles["cann"])

    started = time.monotonic()
    commands.run_plan(calls, router)
    parallel_s = time.monotonic() - started
    out = capsys.readouterr().out
    run = settings.run_dir

    # Every line of a chain names its platform and engine.
    assert f"[ascend@{ENGINE2}] ==> convert" in out
    assert "[tensorrt+cpu@local] ==> trt-perf" in out
    timing = out.split("==> the chains ran together for ")[1]
    overlap = float(timing.split(" s")[0])
    with capsys.disabled():
        print("\n==> the chains ran together for " + timing.split("\n[")[0])
    assert overlap > 1.0, out[-3000:]

    # The manifest holds every chain's entries (merged, none overwritten). (Its times are to
    # the second and the doubles' stages take less: the overlap is the runner's times above,
    # each stage from its container's start to its outputs fetched.)
    manifest = json.loads((run / "manifest.json").read_text())
    stages = {e["stage"] for e in manifest["stages"].values() if e["status"] == "complete"}
    assert {"convert", "infer", "evaluate", "perf", "trt-perf", "parity", "report"} <= stages
    hosts = {e["environment"]["host"] for e in manifest["stages"].values()}
    # scripts/second-engine gives engine 2 its own host name, as a remote host would have.
    assert engine2.info()["Name"] != local.info()["Name"]
    assert engine2.info()["Name"] in hosts and local.info()["Name"] in hosts

    report = json.loads((run / "comparison.json").read_text())
    assert NPU in report["accuracy"] and "onnxruntime" in report["accuracy"]
    platforms = set(report["throughput"])
    assert "Ascend310P3" in platforms, platforms
    assert any("-trt-" in p for p in platforms), platforms  # e.g. T4-trt-fp16 (the double's GPU)
    # Each stage names the host it ran on: the NPU stages engine 2's, the evaluation of their
    # dumps (runtime image, this engine) this host's.
    ran_on = {e["stage"]: e["environment"]["host"] for e in manifest["stages"].values()}
    assert ran_on["convert"] == engine2.info()["Name"]
    assert ran_on["trt-perf"] == local.info()["Name"]
    assert json.loads((run / "eval" / f"{NPU}.json").read_text())["host"] == local.info()["Name"]
    assert owned(local) == [] and owned(engine2) == []

    # The same plan one stage after another, on the same engines, into another results folder.
    sequential = settings_in(tmp_path / "sequential")
    calls = plan_calls(sequential)
    router = router_for(sequential, doubles, local, engine2, monkeypatch)
    started = time.monotonic()
    for call in calls:
        router.run(call)
    sequential_s = time.monotonic() - started
    with capsys.disabled():  # the figures docs/hosts.md gives
        print(f"\nparallel {parallel_s:.1f} s, sequential {sequential_s:.1f} s (2 shared cores)")


def test_a_fault_in_one_chain_stops_the_other_and_a_rerun_continues(
    tmp_path, doubles, local, engine2, monkeypatch, capsys
):
    settings = settings_in(tmp_path / "fault")
    calls = plan_calls(settings)
    # The fault: onnxruntime's evaluation (the local chain's third stage) asks for a backend
    # that has no dumps, while the second engine's chain is still at work.
    faulty = [
        replace(c, args=tuple("no-such-backend" if a == "onnxruntime" else a for a in c.args))
        if c.stage == "evaluate" and "onnxruntime" in map(str, c.args)
        else c
        for c in calls
    ]
    router = router_for(settings, doubles, local, engine2, monkeypatch)
    with pytest.raises(PcbError) as failed:
        commands.run_plan(faulty, router)
    message = str(failed.value)
    assert message.startswith("chain cpu on local, stage evaluate:"), message
    assert f"[ascend@{ENGINE2}] stopped" in message
    assert "A re-run continues where the run stopped" in message
    assert owned(local) == [] and owned(engine2) == []
    manifest = json.loads((settings.run_dir / "manifest.json").read_text())
    assert "report" not in {e["stage"] for e in manifest["stages"].values()}
    capsys.readouterr()

    # The re-run: what completed before the chains is skipped (the head's preprocess), the
    # stage that failed runs again, the report comes out. (The local chain's inference is
    # not asserted skipped: in 4 of 7 re-runs here it ran again, its manifest reason
    # "outputs changed since: dumps/onnxruntime", a cause not yet found.)
    commands.run_plan(calls, router)
    out = capsys.readouterr().out
    assert "preprocess: skipped, complete since" in out, out[-3000:]
    assert "evaluate/onnxruntime: skipped" not in out  # the stage that failed runs again
    report = json.loads((settings.run_dir / "comparison.json").read_text())
    assert NPU in report["accuracy"] and "onnxruntime" in report["accuracy"]


def test_the_missing_device_on_the_remote_host_is_named_before_anything_is_sent(
    tmp_path, doubles, local, engine2
):
    settings = settings_in(tmp_path / "nodevice")
    remote = on_engine2(settings, local, engine2)
    remote.local_image = lambda call: doubles["cann"]
    npu_calls = [c for c in full_pipeline(settings) if c.npu_devices]
    # The stage's own spec: the driver folder is refused first (the engine checks mounts
    # when it creates a container, devices when it starts one).
    with pytest.raises(PcbError) as refused:
        remote.preflight(npu_calls)
    host = engine2.info()["Name"]
    message = str(refused.value)
    assert f"on the engine {ENGINE2} (host {host}): that host has no folder " in message
    assert "/usr/local/Ascend/driver" in message and "npu-smi info" in message
    assert remote.sent.files_sent == 0  # nothing was sent
    # The device itself, as the engine refuses it when it starts the container.
    call = npu_calls[0]
    spec = remote.spec(call, doubles["cann"])
    spec = replace(spec, mounts=tuple(m for m in spec.mounts if m.kind == "volume"))
    with pytest.raises(PcbError) as no_device:
        remote._probe_devices(engine2, call, spec)
    message = str(no_device.value)
    assert f"stage {call.stage} cannot run on the engine {ENGINE2} (host {host})" in message
    assert "that host has no device /dev/davinci0" in message
    assert 'error gathering device information while adding custom device "/dev/davinci0"' in (
        message
    )
    assert owned(engine2) == []
