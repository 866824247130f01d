"""The TensorRT StageCalls, their container specs (GPU request, mounts, user), the dry-run
listing, and the pre-flight error on a host without the NVIDIA runtime."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pcb.cli.options import stage_option
from pcb.cli.parser import build_parser
from pcb.cli.preview import trtexec_commands
from pcb.errors import PcbError
from pcb.orchestration import docker_executor
from pcb.orchestration.argv import report_call
from pcb.orchestration.dry_run import describe_plan
from pcb.orchestration.gpus import cuda_device, gpus_label, parse_gpus
from pcb.orchestration.pipeline import insert_trt, reference_ready, trt_calls
from pcb.orchestration.preflight import check_gpu_host
from pcb.orchestration.settings import Settings, settings_from_config
from pcb.orchestration.spec import Roots, build_spec
from pcb.orchestration.stage import StageCall, with_options
from pcb.tensorrt.names import dump_backends


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    return Roots.of(tmp_path / "data", tmp_path / "results")


def settings(roots: Roots, **overrides) -> Settings:
    config = {
        "data_dir": roots.data,
        "results_dir": roots.results,
        "run": "market",
        "dataset": roots.data / "Market-1501-v15.09.15",
    }
    return settings_from_config(config, **overrides)


def calls(roots: Roots, accuracy: bool = True, parity: bool = True, **overrides) -> list:
    return trt_calls(settings(roots, **overrides), accuracy, parity)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("all", -1),
        (None, -1),
        ("", -1),
        (-1, -1),
        (0, ("0",)),
        ("1", ("1",)),
        ("0, 2", ("0", "2")),
        (["0", 3], ("0", "3")),
        ("GPU-3f2a6c4e-0000", ("GPU-3f2a6c4e-0000",)),
    ],
)
def test_gpu_selection(value, parsed):
    assert parse_gpus(value) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("none", "need a GPU"),
        ("x1", "neither a device index nor a GPU-/MIG- UUID"),
        (",", "empty"),
        (-3, "non-negative"),
        (True, "give all"),
    ],
)
def test_bad_gpu_selection(value, message):
    with pytest.raises(PcbError, match=message):
        parse_gpus(value)


def test_cuda_device_inside_and_outside_containers():
    assert cuda_device(("2", "3"), "docker") == 0  # the container sees them as 0 and 1
    assert cuda_device(("2", "3"), "local") == 2
    assert cuda_device(-1, "local") == 0
    assert cuda_device(("GPU-abc",), "local") == 0
    assert gpus_label(-1) == "all" and gpus_label(("0", "2")) == "device=0,2"


def test_fp16_calls(roots: Roots):
    fp16 = calls(roots)
    assert [(c.stage, c.image, c.gpus) for c in fp16] == [
        ("trt-perf", "tensorrt", -1),
        ("trt-infer", "tensorrt", -1),
        ("evaluate", "runtime", None),
        ("parity", "runtime", None),
    ]
    perf, infer, evaluate, parity = fp16
    assert perf.argv()[:3] == ["trt-perf", "--run", str(roots.results / "market")]
    assert perf.args[:6] == (
        "--run",
        roots.results / "market",
        "--precision",
        "fp16",
        "--device",
        "0",
    )
    assert perf.args[6:] == ("--batch-sizes", "1,4,8,16,32,64")
    assert infer.args[-2:] == ("--batch-size", "16")
    assert evaluate.args[-2:] == ("--backend", "tensorrt-fp16")
    assert parity.args[2:] == (
        "--backend",
        "tensorrt-fp16",
        "--reference",
        "onnxruntime",
        "--threshold",
        "0.99",
    )
    assert "tensorrt-fp16" in dump_backends()


def test_int8_calibrates_first_and_options_pass_through(roots: Roots):
    int8 = calls(
        roots,
        trt_precision="int8",
        gpus="1",
        trt_batch_sizes=(8, 64),
        infer_batch_size=8,
        trt_calib_images=256,
        quiet=True,
    )
    # trt-perf's options without a setting, as `invoke trt-perf --duration 10 --strict` gives
    # them: after those the settings give.
    options = {stage_option("trt-perf", "duration"): "10", stage_option("trt-perf", "strict"): True}
    int8[1] = with_options(int8[1], options)
    assert [c.stage for c in int8] == [
        "trt-calibrate",
        "trt-perf",
        "trt-infer",
        "evaluate",
        "parity",
    ]
    assert int8[0].args[2:] == (
        "--images",
        "256",
        "--batch-size",
        "16",
        "--device",
        "0",
        "--quiet",
    )
    assert int8[1].gpus == ("1",)
    assert int8[1].args[6:] == ("--batch-sizes", "8,64", "--quiet", "--duration", "10", "--strict")
    assert int8[3].args[int8[3].args.index("--backend") + 1] == "tensorrt-int8"


def test_perf_only_and_no_parity(roots: Roots):
    assert [c.stage for c in calls(roots, accuracy=False)] == ["trt-perf"]
    stages = [c.stage for c in calls(roots, parity=False)]
    assert stages == ["trt-perf", "trt-infer", "evaluate"]


def test_the_tensorrt_parsers_accept_every_planned_call(roots: Roots):
    parser = build_parser()
    for kwargs in ({}, {"trt_precision": "int8", "quiet": True}):
        for call in calls(roots, **kwargs):
            if call.image == "tensorrt":
                args = parser.parse_args(call.argv())
                assert args.stage == call.stage and args.run == roots.results / "market"


def test_bad_settings(roots: Roots):
    with pytest.raises(PcbError, match="precision"):
        calls(roots, trt_precision="fp8")
    with pytest.raises(PcbError, match="executor"):
        calls(roots, executor="k8s")
    with pytest.raises(PcbError, match="gpus"):
        calls(roots, gpus="none")


# ---- container specs ---------------------------------------------------------------------------


def test_container_spec_of_trt_perf(roots: Roots):
    perf = calls(roots)[0]
    spec = build_spec(perf, "pcb-tensorrt:latest", roots, uid=1234, gid=5678)
    assert spec.image == "pcb-tensorrt:latest"
    [request] = spec.create_kwargs()["device_requests"]
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    assert spec.user == "1234:5678"
    assert [(m.source, m.target, m.read_only) for m in spec.mounts] == [
        (str(roots.data), "/data", True),
        (str(roots.results), "/results", False),
    ]
    assert spec.command[:3] == ("trt-perf", "--run", "/results/market")
    assert spec.network == "none"
    assert spec.environment["HOME"] == "/tmp"
    assert spec.labels["pcb.stage"] == "trt-perf" and spec.labels["pcb.image"] == "tensorrt"
    assert spec.labels["pcb.run"] == str(roots.results / "market")
    argv = shlex.split(spec.to_docker_run())
    assert argv[argv.index("--gpus") + 1] == "all"


def test_container_spec_with_chosen_gpus(roots: Roots):
    infer = calls(roots, gpus="0,2")[1]
    spec = build_spec(infer, "pcb-tensorrt:latest", roots)
    [request] = spec.create_kwargs()["device_requests"]
    assert request["DeviceIDs"] == ["0", "2"]
    assert not spec.user.startswith("0:")  # never root, even for a root caller
    assert "--gpus '\"device=0,2\"'" in spec.to_docker_run()
    assert spec.command[spec.command.index("--device") + 1] == "0"


def test_evaluate_runs_without_a_gpu(roots: Roots):
    evaluate = calls(roots)[2]
    spec = build_spec(evaluate, "pcb-runtime:latest", roots)
    assert "device_requests" not in spec.create_kwargs()
    assert spec.command[:3] == ("evaluate", "--dataset", "/data/Market-1501-v15.09.15")


# ---- dry run -----------------------------------------------------------------------------------


def describe(roots: Roots, **overrides) -> list[str]:
    """The dry run of the TensorRT stages."""
    return describe_plan(calls(roots, **overrides), settings(roots, **overrides))


def test_dry_run_lists_containers_and_trtexec_lines(roots: Roots):
    lines = describe(roots, trt_batch_sizes=(1, 64))
    text = "\n".join(lines)
    assert lines[0] == "[1/4] trt-perf (pcb-tensorrt, GPUs all)"
    assert lines[1].startswith("  docker run --rm --init --user ")
    assert (
        "--gpus all" in lines[1]
        and "pcb-tensorrt:latest trt-perf --run /results/market" in lines[1]
    )
    assert (
        "    $ trtexec --onnx=/results/market/model/pcb.onnx "
        "--minShapes=input_1:1x3x384x128 --optShapes=input_1:64x3x384x128 "
        "--maxShapes=input_1:64x3x384x128 --shapes=input_1:64x3x384x128 --fp16 "
        "--saveEngine=/results/market/engines/tensorrt/fp16/pcb_bs64.engine --device=0 "
        "--exportTimes=/results/market/perf/tensorrt-fp16/trtexec_bs64.times.json"
    ) in lines
    assert "--loadEngine instead" in text
    # The default trt_image: nvcr.io/nvidia/tensorrt:24.05-py3, TensorRT 10.0.1.
    assert "flags of TensorRT 10.0.1, the nvcr.io/nvidia/tensorrt:24.05-py3 base" in text
    infer_at = lines.index("[2/4] trt-infer (pcb-tensorrt, GPUs all)")
    assert lines[infer_at + 2].endswith("pcb_bs16.engine --device=0 --skipInference")


def test_dry_run_shows_the_flags_of_the_chosen_image(roots: Roots):
    lines = describe(roots, trt_batch_sizes=(8,), trt_image="8.6")
    text = "\n".join(lines)
    assert "flags of TensorRT 8.6.1, the nvcr.io/nvidia/tensorrt:23.09-py3 base" in text
    assert "--skipInference" in text and "--buildOnly" not in text
    with pytest.raises(PcbError, match="trt_image '7.2' is not one of the checked"):
        calls(roots, trt_image="7.2")
    assert "[3/4] evaluate (pcb-runtime)" in lines
    # The content tag this checkout built, or :latest before any build (issue 14).
    assert re.search(r"pcb-runtime:\S+ evaluate", text) and "--backend tensorrt-fp16" in text


def test_dry_run_local_uses_host_paths_and_the_chosen_device(roots: Roots):
    lines = describe(roots, executor="local", gpus="3", trt_precision="int8")
    assert lines[0] == "[1/5] trt-calibrate (this host, GPUs device=3)"
    assert lines[1].startswith("  python -m pcb trt-calibrate --run " + str(roots.results))
    text = "\n".join(lines)
    assert f"--calib={roots.results}/market/engines/tensorrt/int8/calibration.cache" in text
    assert "--device=3" in text and "docker run" not in text


def test_dry_run_refuses_a_run_outside_results(roots: Roots, tmp_path: Path):
    elsewhere = report_call(settings(roots), runs=[str(tmp_path / "elsewhere")])
    with pytest.raises(PcbError, match="outside the folders a container sees"):
        describe_plan([elsewhere], settings(roots))


# ---- pre-flight --------------------------------------------------------------------------------


class Image:
    labels: dict = {}


class Images:
    def get(self, reference):
        return Image()


class NoGpuClient:
    images = Images()

    def info(self):
        return {"Runtimes": {"runc": {}}}

    @property
    def containers(self):
        raise AssertionError("a container was about to be created")


def test_without_the_nvidia_runtime_the_error_names_it(roots: Roots, monkeypatch):
    monkeypatch.setattr(docker_executor.shutil, "which", lambda name: None)
    perf = calls(roots)[0]
    with pytest.raises(PcbError) as error:
        docker_executor.run_in_container(
            perf, data_dir=roots.data, results_dir=roots.results, client=NoGpuClient()
        )
    message = str(error.value)
    assert "stage trt-perf asks for GPUs, but the Docker engine has no NVIDIA runtime" in message
    assert "NVIDIA driver" in message and "NVIDIA Container Toolkit" in message
    assert "nvidia-ctk runtime configure --runtime=docker" in message


def test_trtexec_commands_from_a_stage_argv():
    argv = [
        "trt-perf",
        "--run",
        "/results/market",
        "--precision",
        "int8",
        "--batch-sizes",
        "8",
        "--duration",
        "5",
        "--threads",
    ]
    [command, note, flags] = trtexec_commands([*argv, "--profile", "--workspace-mib", "256"])
    assert command == (
        "trtexec --onnx=/results/market/model/pcb.onnx --minShapes=input_1:1x3x384x128 "
        "--optShapes=input_1:8x3x384x128 --maxShapes=input_1:8x3x384x128 "
        "--shapes=input_1:8x3x384x128 --int8 "
        "--calib=/results/market/engines/tensorrt/int8/calibration.cache "
        "--saveEngine=/results/market/engines/tensorrt/int8/pcb_bs8.engine --device=0 "
        "--memPoolSize=workspace:256 --duration=5 --threads "
        "--exportTimes=/results/market/perf/tensorrt-int8/trtexec_bs8.times.json "
        "--exportProfile=/results/market/perf/tensorrt-int8/trtexec_bs8.profile.json "
        "--separateProfileRun"
    )
    assert "--loadEngine" in note and "TensorRT 10.0.1" in flags
    [build, _] = trtexec_commands(
        ["trt-infer", "--run", "/r", "--batch-size", "4", "--device", "1"]
    )
    assert build.endswith("/r/engines/tensorrt/fp16/pcb_bs4.engine --device=1 --skipInference")
    [older, _] = trtexec_commands(["trt-infer", "--run", "/r", "--batch-size", "4"], image="8.6")
    assert older.endswith("--skipInference")
    assert trtexec_commands(["trt-calibrate", "--run", "/r"]) == []
    assert trtexec_commands(["evaluate", "--run", "/r"]) == []


def test_insert_trt_into_a_pipeline(roots: Roots):
    stages = ["export", "preprocess", "infer", "evaluate", "perf", "report"]
    cpu = [StageCall(stage, "runtime") for stage in stages]
    merged = insert_trt(cpu, calls(roots, trt_precision="int8"))
    assert [c.stage for c in merged] == [
        "export",
        "preprocess",
        "trt-calibrate",
        "trt-perf",
        "trt-infer",
        "evaluate",
        "infer",
        "evaluate",
        "perf",
        "parity",
        "report",
    ]
    assert merged[5].args[-1] == "tensorrt-int8" and merged[7].args == ()
    assert [c.stage for c in insert_trt([], calls(roots))][-1] == "parity"


def test_reference_ready(tmp_path: Path):
    assert not reference_ready(tmp_path)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "onnxruntime.json").write_text("{}")
    assert reference_ready(tmp_path)


def test_gpu_host_check_before_anything_runs(roots: Roots, monkeypatch):
    monkeypatch.setattr(docker_executor.shutil, "which", lambda name: None)
    trt = calls(roots)
    with pytest.raises(PcbError, match=r"trt-perf \(pcb-tensorrt\) needs an NVIDIA GPU.*Toolkit"):
        check_gpu_host(trt, "docker", NoGpuClient())
    check_gpu_host([c for c in trt if c.gpus is None], "docker", NoGpuClient())  # no GPU stage

    class GpuClient(NoGpuClient):
        def info(self):
            return {"Runtimes": {"runc": {}, "nvidia": {}}}

    check_gpu_host(trt, "docker", GpuClient())
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PcbError, match="trtexec is not on the PATH"):
        check_gpu_host(trt, "local")
