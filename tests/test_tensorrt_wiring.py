"""The TensorRT stages wired into settings, the pipeline, `python -m pcb` and the Invoke tasks.

The wiring lives in files another change owns (pcb/cli/, pcb/orchestration/{settings,
pipeline}.py, tasks.py, invoke.yaml); until it is in, each test here is skipped, saying which
piece is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import pipeline
from pcb.orchestration.settings import Settings, settings_from_config

PROJECT = Path(__file__).resolve().parents[1]
WIRED_SETTINGS = {"trt", "trt_precision", "trt_batch_sizes", "trt_calib_images", "gpus"}


def _settings_wired() -> bool:
    return {f.name for f in dataclasses.fields(Settings)} >= WIRED_SETTINGS


def _cli_wired() -> bool:
    from pcb.cli.parser import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "trt-perf" in action.choices
    return False


needs_settings = pytest.mark.skipif(
    not _settings_wired() or not hasattr(pipeline, "trt_calls"),
    reason="the TensorRT settings / pipeline wiring is not applied yet",
)
needs_cli = pytest.mark.skipif(not _cli_wired(), reason="pcb/cli/ does not register trt-*")


@needs_settings
def test_trt_settings():
    settings = settings_from_config({}, gpus="0, 2", trt_precision="INT8", trt_batch_sizes="1,64")
    assert (settings.gpus, settings.trt_precision) == ("0,2", "int8")
    assert settings.trt_batch_sizes == (1, 64)
    defaults = settings_from_config({})
    assert (defaults.trt, defaults.gpus, defaults.trt_precision) == (False, "all", "fp16")
    assert settings_from_config({"gpus": 1}).gpus == "1"


@needs_settings
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"trt_precision": "bf16"}, r"pcb.trt_precision = 'bf16'.*fp16, fp32, int8"),
        ({"gpus": "none"}, r"pcb.gpus = 'none'.*need a GPU"),
        ({"trt_calib_images": 0}, r"trt_calib_images = 0"),
        ({"trt": "yes"}, r"pcb.trt = 'yes': expected true or false"),
    ],
)
def test_bad_trt_settings(overrides, message):
    with pytest.raises(PcbError, match=message):
        settings_from_config({}, **overrides)


@needs_settings
def test_invoke_yaml_has_the_trt_keys():
    from invoke.config import Config

    config = Config(project_location=str(PROJECT))
    config.load_project()
    assert set(config["pcb"]) >= WIRED_SETTINGS
    settings = settings_from_config(dict(config["pcb"]))
    assert not settings.trt and settings.trt_precision == "fp16"


@needs_settings
def test_full_pipeline_with_trt():
    settings = settings_from_config({}, trt=True, gpus="1")
    stages = [call.stage for call in pipeline.full_pipeline(settings)]
    assert stages == [
        "export",
        "preprocess",
        "trt-perf",
        "trt-infer",
        "evaluate",
        "infer",
        "evaluate",
        "perf",
        "parity",
        "report",
    ]
    gpu_calls = [c for c in pipeline.full_pipeline(settings) if c.gpus is not None]
    assert [c.gpus for c in gpu_calls] == [("1",), ("1",)]
    assert all(c.image == "tensorrt" for c in gpu_calls)
    without = [c.stage for c in pipeline.full_pipeline(settings_from_config({}))]
    assert not [s for s in without if s.startswith("trt-")]


@needs_settings
def test_trt_calls_follow_the_settings():
    settings = settings_from_config(
        {}, trt_precision="fp32", batch_sizes="1,8", infer_batch_size=8, quiet=True
    )
    perf, infer, _evaluate = pipeline.trt_calls(settings, parity=False)

    def value(call, flag):
        return call.args[call.args.index(flag) + 1]

    assert (value(perf, "--precision"), value(perf, "--batch-sizes")) == ("fp32", "1,8")
    assert value(infer, "--batch-size") == "8"
    assert value(perf, "--run") == settings.run_dir and "--quiet" in perf.args
    perf_64 = pipeline.trt_calls(settings_from_config({}, trt_batch_sizes="64"))[0]
    assert value(perf_64, "--batch-sizes") == "64"


@needs_cli
def test_python_m_pcb_has_the_trt_stages():
    from pcb.cli.parser import build_parser

    args = build_parser().parse_args(["trt-perf", "--run", "results/x", "--batch-sizes", "8"])
    assert args.stage == "trt-perf" and args.batch_sizes == [8]
    args = build_parser().parse_args(["evaluate", "--dataset", "d", "--run", "r", "--backend",
                                      "tensorrt-fp16"])  # fmt: skip
    assert args.backend == "tensorrt-fp16"


@needs_settings
@needs_cli
def test_invoke_trt_dry_run_and_the_missing_runtime():
    dry = subprocess.run(
        [sys.executable, "-m", "invoke", "trt", "--gpus", "0", "--batch-sizes", "1,64",
         "--dry-run"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "trt-perf (pcb-tensorrt, GPUs device=0)" in dry.stdout
    assert "$ trtexec --onnx=/results/market/model/pcb.onnx" in dry.stdout
    assert "--shapes=input_1:64x3x384x128 --fp16" in dry.stdout
    assert "dry run: nothing ran" in dry.stdout
    from pcb.orchestration.docker_executor import connect, gpu_runtime_available

    try:
        if gpu_runtime_available(connect(timeout=10)):
            pytest.skip("this host has the NVIDIA runtime: the missing-runtime error cannot show")
    except PcbError:
        pytest.skip("no Docker engine here")
    failed = subprocess.run(
        [sys.executable, "-m", "invoke", "trt"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "no NVIDIA runtime" in failed.stderr and "NVIDIA Container Toolkit" in failed.stderr


@needs_settings
@needs_cli
def test_docs_name_only_tasks_and_stages_that_exist():
    import importlib.util
    import inspect
    import re

    text = (PROJECT / "docs" / "tensorrt.md").read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location("project_tasks", PROJECT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    known = {n.replace("_", "-") for n, v in vars(tasks).items() if type(v).__name__ == "Task"}
    assert set(re.findall(r"invoke ([a-z][a-z-]+)", text)) <= known
    flags = set(re.findall(r"invoke (?:trt|full)[^`\n]*?(--[a-z-]+)", text))
    def params(task):
        return {f"--{p.replace('_', '-')}" for p in inspect.signature(task.body).parameters}

    trt_params, full_params = params(tasks.trt), params(tasks.full)
    assert flags <= trt_params | full_params
    from pcb.cli.parser import build_parser

    for stage in ("trt-calibrate", "trt-perf", "trt-infer"):
        assert build_parser().parse_args([stage, "--run", "r"]).stage == stage
