"""The Invoke tasks: generated from the same option table as `python -m pcb`, and what each one
runs, asserted call by call (stage, image, argv, devices) and image by image, without a Docker
engine: the executor, the host checks and the builds are stand-ins that record."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from invoke import Config, Context, Exit

from pcb.cli.options import STAGE_NAMES
from pcb.cli.parser import build_parser
from pcb.orchestration import build_inputs, builds, commands, engine, images, lifecycle
from pcb.orchestration.executors import Preview
from pcb.orchestration.stage import StageCall

ROOT = Path(__file__).resolve().parents[1]


def load_tasks() -> Any:
    spec = importlib.util.spec_from_file_location("project_tasks", ROOT / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tasks = load_tasks()


def context(**settings: Any) -> Context:
    """A context whose invoke.yaml `pcb:` section is `settings` (the defaults otherwise)."""
    return Context(Config(overrides={"pcb": settings}))


def stage_flags(stage: str) -> set[str]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    actions = sub.choices[stage]._actions
    return {flag for a in actions for flag in a.option_strings if flag not in ("-h", "--help")}


# ---- the options: generated from the stage table -------------------------------------------------


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_invoke_help_shows_every_option_of_the_stage(stage: str):
    """`invoke --help <stage>` lists every option `python -m pcb <stage> --help` does."""
    shown = subprocess.run(
        [sys.executable, "-m", "invoke", "--help", stage],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    invoke_flags = set(re.findall(r"^\s+(--[a-z0-9-]+)", shown.stdout, flags=re.M))
    missing = stage_flags(stage) - invoke_flags
    assert not missing, f"invoke {stage} lacks {sorted(missing)}"


def task_flags(task: Any) -> set[str]:
    return {f"--{name}" for arg in task.get_arguments() for name in arg.names}


def test_the_task_objects_agree():
    """The same comparison on the Task objects; the two options Invoke lacked before."""
    assert stage_flags("perf") <= task_flags(tasks.perf)
    assert "--warmup" in task_flags(tasks.perf)
    assert "--skip-bad-images" in task_flags(tasks.preprocess)


def test_help_is_h_everywhere_and_whole_in_the_list():
    shown = subprocess.run(
        [sys.executable, "-m", "invoke", "full", "-h"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "Usage: inv[oke] [--core-opts] full" in shown.stdout
    for name, task in vars(tasks).items():
        if type(task).__name__ == "Task":
            # `invoke --list` shows a task's first docstring line: the whole help.
            assert len(task.__doc__.strip().splitlines()) == 1, name
            assert not any(len(arg.names) > 1 for arg in task.get_arguments()), name


# ---- what the tasks run ---------------------------------------------------------------------


class Recorder:
    """Stands in for the executor, the host checks and the image builds."""

    name = "docker"

    def __init__(self) -> None:
        self.calls: list[StageCall] = []
        self.checked: list[list[StageCall]] = []
        self.built: list[list[str]] = []

    def preview(self, call: StageCall) -> Preview:
        return Preview("recorder", " ".join(call.argv()), tuple(call.argv()), None)

    def run(self, call: StageCall) -> None:
        self.calls.append(call)

    def argvs(self) -> list[list[str]]:
        return [call.argv() for call in self.calls]


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(commands, "executor_for", lambda settings, host_root=None: recorder)
    monkeypatch.setattr(
        commands, "check_hosts", lambda calls, executor, host_root=None: recorder.checked.append(
            list(calls))
    )  # fmt: skip
    monkeypatch.setattr(
        builds, "build", lambda settings, names, *a, **k: recorder.built.append(list(names))
    )
    # The inputs' pre-flight (inputs_check.py) has tests of its own in test_newcomer.py.
    monkeypatch.setattr(commands, "check_inputs", lambda settings: None)
    return recorder


def test_full_demo(recorder: Recorder):
    tasks.full(context(), demo=True)
    assert recorder.built == [["export", "runtime"]]
    assert [c.image for c in recorder.calls] == ["export"] * 2 + ["runtime"] * 5
    assert recorder.argvs() == [
        ["demo-data", "--out", "data/demo", "--seed", "0", "--identities", "24"],
        ["export", "--checkpoint", "data/demo/PCB_demo.pt", "--run", "results/demo"],
        ["preprocess", "--dataset", "data/demo/Market-1501-v15.09.15", "--run", "results/demo",
         "--workers", "0"],
        ["infer", "--run", "results/demo", "--backend", "onnxruntime", "--batch-size", "16",
         "--threads", "0"],
        ["evaluate", "--dataset", "data/demo/Market-1501-v15.09.15", "--run", "results/demo",
         "--backend", "onnxruntime"],
        ["perf", "--run", "results/demo", "--backend", "onnxruntime", "--batch-sizes",
         "1,4,8,16,32,64", "--warmup", "1", "--timer", "loadgen", "--min-duration", "10",
         "--min-queries", "100", "--repeats", "3", "--threads", "0"],
        ["report", "--run", "results/demo"],
    ]  # fmt: skip
    assert recorder.checked == [recorder.calls]  # every call checked before the first ran
    assert recorder.calls[0].writes_data and not any(c.writes_data for c in recorder.calls[1:])


def test_full_force_and_int8_reach_every_stage_but_the_report(recorder: Recorder):
    tasks.full(context(batch_sizes=[1, 8]), int8=True, force=True, quiet=True)
    forced = {c.stage: "--force" in c.args for c in recorder.calls}
    assert forced.pop("report") is False and all(forced.values())
    quantize = next(c for c in recorder.calls if c.stage == "quantize")
    assert (quantize.image, quantize.argv()) == (
        "export",
        ["quantize", "--run", "results/market", "--quiet", "--force"],
    )


def test_full_with_a_chip_and_the_gpu(recorder: Recorder):
    tasks.full(context(), chip="310P3", devices="0,1", trt=True, gpus="1")
    assert [(c.stage, c.image, c.npu_devices, c.gpus) for c in recorder.calls] == [
        ("export", "export", (), None),
        ("preprocess", "runtime", (), None),
        ("trt-perf", "tensorrt", (), ("1",)),
        ("trt-infer", "tensorrt", (), ("1",)),
        ("evaluate", "runtime", (), None),
        ("convert", "cann", (), None),
        ("infer", "cann", (0,), None),
        ("evaluate", "runtime", (), None),
        ("infer", "runtime", (), None),
        ("evaluate", "runtime", (), None),
        ("parity", "runtime", (), None),
        ("perf", "cann", (0, 1), None),
        ("parity", "runtime", (), None),
        ("report", "runtime", (), None),
    ]
    assert recorder.built == [["cann", "export", "runtime", "tensorrt"]]


def test_trt(recorder: Recorder):
    tasks.trt(context(), gpus="0", batch_sizes="1,64", precision="int8")
    assert recorder.argvs() == [
        [
            "trt-calibrate",
            "--run",
            "results/market",
            "--images",
            "512",
            "--batch-size",
            "16",
            "--device",
            "0",
        ],
        [
            "trt-perf",
            "--run",
            "results/market",
            "--precision",
            "int8",
            "--device",
            "0",
            "--batch-sizes",
            "1,64",
        ],
        [
            "trt-infer",
            "--run",
            "results/market",
            "--precision",
            "int8",
            "--device",
            "0",
            "--batch-size",
            "16",
        ],
        [
            "evaluate",
            "--dataset",
            "data/Market-1501-v15.09.15",
            "--run",
            "results/market",
            "--backend",
            "tensorrt-int8",
        ],
        ["report", "--run", "results/market"],
    ]  # fmt: skip (no parity: this checkout has no onnxruntime evaluation of results/market)
    assert recorder.built == [["runtime", "tensorrt"]]
    recorder.calls.clear()
    tasks.trt(context(), no_accuracy=True, local=True)
    assert [c.stage for c in recorder.calls] == ["trt-perf", "report"]


def test_convert_with_aoe_names_its_npu(recorder: Recorder, capsys):
    tasks.convert(context(), chip="310P3", aoe=True, device="2", batch_sizes="1,8")
    [call] = recorder.calls
    assert (call.image, call.npu_devices) == ("cann", (2,))
    assert call.argv() == [
        "convert", "--run", "results/market", "--chip", "310P3", "--batch-sizes", "1,8",
        "--aoe", "--device", "2",
    ]  # fmt: skip
    assert recorder.built == []  # a single stage builds nothing
    tasks.convert(context(), chip="310P3", print_docker=True)
    line = capsys.readouterr().out.strip()
    # The pipeline's batch sizes (perf's and infer's), no NPU for atc alone.
    assert line.endswith("convert --run /results/market --chip 310P3 --batch-sizes 1,4,8,16,32,64")
    assert "--device /dev/davinci" not in line


def test_perf_on_the_npu_takes_the_npu_settings(recorder: Recorder):
    tasks.perf(context(npu_loop=7), backend="ais_bench", chip="310P3", devices="0,1", warmup="2")
    [call] = recorder.calls
    assert (call.image, call.npu_devices) == ("cann", (0, 1))
    args = call.argv()
    # --warmup overrides npu_warmup for ais_bench; npu_loop (not perf_iterations) times it.
    assert args[args.index("--warmup") + 1] == "2" and args[args.index("--iterations") + 1] == "7"
    recorder.calls.clear()
    tasks.perf(context(npu_loop=7), iterations="3", timer="fixed", precision="int8", demo=True)
    [call] = recorder.calls
    args = call.argv()
    assert call.image == "runtime" and args[args.index("--iterations") + 1] == "3"
    assert args[-2:] == ["--precision", "int8"]
    # LoadGen's run rules from the task's options, over invoke.yaml's.
    recorder.calls.clear()
    tasks.perf(context(perf_min_duration=10), min_duration="0.5", min_queries="64", demo=True)
    [call] = recorder.calls
    args = call.argv()
    assert args[args.index("--timer") :][:5] == ["--timer", "loadgen", "--min-duration", "0.5",
                                                  "--min-queries"]  # fmt: skip
    assert args[args.index("--min-queries") + 1] == "64"


def test_stage_options_without_a_setting_reach_the_stage(recorder: Recorder):
    tasks.preprocess(context(), skip_bad_images=True, demo=True)
    tasks.export(context(), opset="12", force=True)
    tasks.parity(context(), backend="tensorrt-fp16", reference="onnxruntime-int8")
    preprocess, export, parity = recorder.argvs()
    assert preprocess[-1] == "--skip-bad-images"
    assert export[-3:] == ["--opset", "12", "--force"]
    assert parity[parity.index("--reference") + 1] == "onnxruntime-int8"
    with pytest.raises(Exit, match=r"--opset 'x': expected a positive integer"):
        tasks.export(context(), opset="x")


def test_verify_and_report(recorder: Recorder):
    tasks.verify(context(), demo=True, quiet=True)
    tasks.report(context(), runs=["demo", "results/other"], show="all", no_plots=True)
    verify, report = recorder.calls
    assert (verify.image, verify.argv()) == ("runtime", ["verify", "--run", "results/demo",
                                                         "--quiet"])  # fmt: skip
    assert report.argv() == [
        "report", "--run", "results/demo", "--run", "results/other", "--out",
        "results/comparison", "--show", "all", "--no-plots",
    ]  # fmt: skip


def test_import_results_needs_its_folder(recorder: Recorder):
    with pytest.raises(Exit, match="import-results needs the benchmark tool's result/ folder"):
        tasks.import_results(context())
    tasks.import_results(context(), from_="data/result", no_evaluate=True, chip="310P3")
    assert recorder.argvs() == [
        ["import-results", "--from", "data/result", "--run", "results/market", "--chip", "310P3"]
    ]


def test_build(monkeypatch):
    seen: dict[str, Any] = {}

    def build_images(names, **kwargs):
        seen.update(names=list(names), **kwargs)
        return []

    monkeypatch.setattr(engine, "connect", lambda *a, **k: "client")
    monkeypatch.setattr(images, "build_images", build_images)
    monkeypatch.setattr(build_inputs, "resolve_base_image", lambda setting, client, names: None)
    tasks.build(context(), image=["runtime"], build_arg=["A=1"], force=True)
    assert seen["names"] == ["runtime"] and seen["force"] is True
    assert seen["extra_build_args"] == {"runtime": {"A": "1"}} and seen["client"] == "client"
    seen.clear()
    tasks.build(context())
    assert seen["names"] == ["export", "runtime"] and seen["force"] is False


def test_build_check_exits_1_without_a_digest(monkeypatch, capsys):
    class Checked:
        digest = None

        def describe(self) -> str:
            return "no digest"

    monkeypatch.setattr(engine, "connect", lambda *a, **k: "client")
    monkeypatch.setattr(images, "check_base", lambda client, name, base: Checked())
    with pytest.raises(Exit) as stopped:
        tasks.build(context(), image=["cann"], check=True)
    assert stopped.value.code == 1 and "could not be had from its registry" in str(stopped.value)
    assert capsys.readouterr().out == "no digest\n"


def test_clean(monkeypatch):
    seen = {}

    class Report:
        def lines(self):
            return ["nothing to remove"]

    def clean(client, root, **kwargs):
        seen.update(client=client, root=root, **kwargs)
        return Report()

    monkeypatch.setattr(engine, "connect", lambda *a, **k: "client")
    monkeypatch.setattr(lifecycle, "clean", clean)
    tasks.clean(context(base_image="pcb-base:x"), dry_run=True, containers_only=True)
    assert seen == {
        "client": "client",
        "root": images.PROJECT_ROOT,
        "dry_run": True,
        "images": False,
        "bases": ("pcb-base:x",),
    }


def test_bench_argv():
    from pcb.bench.runner import task_argv

    assert task_argv(True, "int8", 2, "results/b") == [
        "--threads", "2", "--out", "results/b", "--quick", "--only", "int8",
    ]  # fmt: skip
    assert task_argv(False, None, 0, "results/bench") == [
        "--threads", "0", "--out", "results/bench"
    ]  # fmt: skip
