"""The options of the Invoke tasks, and how a task's given options become Settings.

A stage's task takes every option of the stage (pcb/cli/options.py: `stage_task_options`),
plus a few of its own below (--demo, --local, --print-docker, --dry-run, ...). An option with a
setting overrides that invoke.yaml setting; a stage option without one is handed to the stage
as it is; the rest steer the task itself. An option not given (None, False, nothing listed)
leaves invoke.yaml's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cli.options import Option, stage_options
from .argv import NPU_BACKEND
from .settings import Settings, settings_from_config


@dataclass(frozen=True)
class TaskOption:
    """One option of a task: Invoke shows `name` as --name (underscores as dashes)."""

    name: str
    help: str
    setting: str | None = None  # the invoke.yaml setting it overrides
    npu_setting: str | None = None  # ... when the stage's backend is ais_bench
    switch: bool = False
    value: Any = True  # what a given switch sets its setting to (--local: executor "local")
    iterable: bool = False  # repeatable: a list
    default: Any = None  # the task's own default, for options with no setting
    stage_key: str | None = None  # the stage option it is handed on as, if it has no setting


def task_name(flag: str) -> str:
    """--static-batch-sizes -> static_batch_sizes; --from -> from_ (Invoke drops the _)."""
    name = flag[2:].replace("-", "_")
    return f"{name}_" if name in ("from", "import", "in") else name


def flag_of(name: str) -> str:
    """static_batch_sizes -> --static-batch-sizes; from_ -> --from (task_name's inverse)."""
    return "--" + name.rstrip("_").replace("_", "-")


def from_stage_option(stage: str, option: Option) -> TaskOption:
    return TaskOption(
        task_name(option.flag),
        # A task's --run names a run under results/, which its stage gets as a folder.
        RUN.help if option.setting == "run" else option.help_in(stage),
        setting=option.setting,
        npu_setting=option.npu_setting,
        switch=option.is_switch,
        stage_key=None if option.setting else option.key,
    )


def stage_task_options(stage: str) -> tuple[TaskOption, ...]:
    return tuple(from_stage_option(stage, option) for option in stage_options(stage))


# ---- options of the tasks themselves -----------------------------------------------------------

DEMO = TaskOption(
    "demo",
    "use the generated synthetic data and untrained checkpoint (run: results/demo, or --run)",
    setting="demo",
    switch=True,
)
LOCAL = TaskOption(
    "local",
    "run on this host instead of in the stage's container",
    setting="executor",
    switch=True,
    value="local",
)
PRINT_DOCKER = TaskOption(
    "print_docker",
    "print the equivalent `docker run` command lines instead of running",
    switch=True,
)
DRY_RUN = TaskOption(
    "dry_run",
    "print every container and command that would run, in order; run nothing",
    switch=True,
)
ENGINE = TaskOption(
    "engine",
    "IMAGE=ENDPOINT: run that image's stages on another Docker engine (a context name, "
    "unix://, tcp://, ssh://user@host; docs/hosts.md), repeatable; a bare ENDPOINT: all images",
    setting="engines",
    iterable=True,
)
RUNNING = (LOCAL, ENGINE, PRINT_DOCKER, DRY_RUN)

RUN = TaskOption("run", "run folder name under results/ (default from invoke.yaml)", setting="run")
QUIET = TaskOption(
    "quiet", "no progress (bars on a terminal, lines elsewhere)", setting="quiet", switch=True
)
DATASET = TaskOption("dataset", "Market-1501 root", setting="dataset")
CHECKPOINT = TaskOption("checkpoint", "checkpoint file", setting="checkpoint")
CHIP = TaskOption(
    "chip",
    "Ascend chip: 310, 310P3, 310B1, ... or auto (npu-smi); adds the NPU stages",
    setting="chip",
)
DEVICES = TaskOption(
    "devices",
    "NPU device ids, e.g. 0 or 0,1,2,3 (throughput on all of them at once)",
    setting="devices",
)
AOE = TaskOption(
    "aoe",
    "also AOE-tune the models (the guide's 310P_aoe column; slow, needs an NPU)",
    setting="aoe",
    switch=True,
)
DYNAMIC = TaskOption(
    "dynamic",
    "one dynamic-batch model instead of one model per batch size",
    setting="dynamic",
    switch=True,
)
GPUS = TaskOption(
    "gpus", "GPUs for the TensorRT stages: all (default) or ids, e.g. 0 or 0,1", setting="gpus"
)
TRT_PRECISION = TaskOption(
    "precision",
    "TensorRT precision: fp16 (the guide's, default), fp32 or int8 (calibrated)",
    setting="trt_precision",
)
FORCE_ALL = TaskOption(
    "force",
    "run the stage(s) even when results/<run>/manifest.json shows them current",
    switch=True,
)

FULL = (
    DEMO,
    DATASET,
    CHECKPOINT,
    RUN,
    TaskOption("batch_sizes", "perf batch sizes, e.g. 1,4,8,16,32,64", setting="batch_sizes"),
    TaskOption("timer", "perf timer: loadgen (default) or fixed", setting="perf_timer"),
    TaskOption(
        "min_duration", "LoadGen: seconds each scenario runs at least", setting="perf_min_duration"
    ),
    TaskOption("warmup", "untimed batches per batch size", setting="perf_warmup"),
    TaskOption(
        "iterations", "timed batches per batch size (--timer fixed)", setting="perf_iterations"
    ),
    QUIET,
    CHIP,
    DEVICES,
    AOE,
    DYNAMIC,
    TaskOption(
        "trt",
        "add the TensorRT stages: trtexec throughput, GPU accuracy (docs/tensorrt.md)",
        setting="trt",
        switch=True,
    ),
    GPUS,
    TRT_PRECISION,
    TaskOption(
        "int8",
        "also the CPU INT8 platform: quantize, then infer, evaluate, parity, perf at int8",
        setting="int8",
        switch=True,
    ),
    TaskOption(
        "ap_ties",
        "AP with tied distances ranked one by one (ranked, default) or grouped as sklearn's "
        "average_precision_score does (grouped, what the upstream evaluation prints)",
        setting="ap_ties",
    ),
    TaskOption(
        "torch",
        "also the PyTorch platform: torch, torch-bf16 or torch-fp16 (CUDA); infer, evaluate, "
        "parity and perf with it, in the export image",
        setting="torch",
    ),
    FORCE_ALL,
    *RUNNING,
)
TRT = (
    RUN,
    DEMO,
    QUIET,
    GPUS,
    TRT_PRECISION,
    TaskOption(
        "batch_sizes",
        "trtexec batch sizes, e.g. 1,4,8,16,32,64 (default: trt_batch_sizes)",
        setting="trt_batch_sizes",
    ),
    TaskOption(
        "batch_size",
        "GPU inference batch size; its engine is built when trt-perf did not time it",
        setting="infer_batch_size",
    ),
    TaskOption(
        "no_accuracy", "throughput only: no GPU inference, evaluation or parity", switch=True
    ),
    *RUNNING,
)
# What some stage tasks take besides their stage's options.
STAGE_EXTRAS: dict[str, tuple[TaskOption, ...]] = {
    # The devices setting as `invoke convert` has always taken it; --device sets the same.
    "convert": (DEVICES,),
    "parity": (TaskOption("chip", "the chip whose ais_bench dumps to compare", setting="chip"),),
    "report": (
        TaskOption(
            "runs",
            "a run to compare: a name under results/ or a folder (repeat for several)",
            iterable=True,
        ),
    ),
    "import-results": (
        TaskOption(
            "dataset", "Market-1501 root, to evaluate the imported dumps", setting="dataset"
        ),
        TaskOption("no_evaluate", "import only: no evaluate, parity or report", switch=True),
    ),
    **{stage: (GPUS,) for stage in ("trt-calibrate", "trt-perf", "trt-infer")},
}
BUILD = (
    TaskOption(
        "image",
        "export, runtime, cann or tensorrt; repeatable (default: export and runtime)",
        iterable=True,
    ),
    TaskOption(
        "base_image",
        'export/runtime base: "auto", "offline" (debootstrap) or an image name',
        setting="base_image",
    ),
    TaskOption(
        "wheels",
        "a folder of wheels to install from, e.g. one holding the torch CPU wheel",
        setting="wheels",
    ),
    TaskOption("index_url", "the package index pip uses inside the build", setting="index_url"),
    TaskOption(
        "ca_bundle", "a CA bundle for pip during the build (left in no layer)", setting="ca_bundle"
    ),
    TaskOption("force", "rebuild even when the content tag exists", switch=True),
    TaskOption(
        "build_arg",
        "NAME=VALUE for the Dockerfiles, repeatable (e.g. AIS_BENCH_FIND_LINKS=url)",
        iterable=True,
    ),
    TaskOption(
        "check",
        "build nothing: print each image's base and its registry digest, or why none",
        switch=True,
    ),
    TaskOption(
        "cann_version",
        "the cann image's CANN version (a published 310P tag; docs/ascend.md)",
        setting="cann_version",
    ),
    TaskOption(
        "cann_image",
        "the cann image's base, any CANN toolkit image (pcb.cann_image)",
        setting="cann_image",
    ),
)
CLEAN = (
    TaskOption("dry_run", "list what would be removed; remove nothing", switch=True),
    TaskOption("containers_only", "leave the images alone", switch=True),
    TaskOption(
        "engine",
        "also a remote engine (ENDPOINT or IMAGE=ENDPOINT, repeatable; default: those of "
        "pcb.engines): its leftover containers and this checkout's run volumes",
        setting="engines",
        iterable=True,
    ),
)
BASE_IMAGE = (TaskOption("force", "rebuild even when the Debian base image exists", switch=True),)
LOCKS = (
    TaskOption(
        "image",
        "build-tools, export, runtime, cann or tensorrt; repeatable (default: all)",
        iterable=True,
    ),
    TaskOption(
        "find_links",
        "where the export lock finds the torch CPU wheel, e.g. /opt/wheels; repeatable",
        iterable=True,
    ),
)
BENCH = (
    TaskOption(
        "quick", "a smaller run (the full one takes about 25 minutes on 2 cores)", switch=True
    ),
    TaskOption(
        "only",
        "comma-separated: rerun,preprocessing,evaluation,cpu_inference,loadgen,torch,int8,"
        "market_scale",
    ),
    TaskOption("threads", "0 = all cores", default=0),
    TaskOption("out", "folder for <date>.json (default results/bench)", default="results/bench"),
    TaskOption("compare", "an earlier run's <date>.json: print every figure beside it, new / old"),
)


# ---- from given options to Settings ------------------------------------------------------------


def given(value: Any) -> bool:
    """Whether a task's option was given: Invoke passes None, False or [] for one that was
    not."""
    return value is not None and value is not False and value != []


@dataclass(frozen=True)
class Given:
    """A task's options as given, sorted by where they go."""

    overrides: dict[str, Any] = field(default_factory=dict)  # setting -> value
    # (setting, ais_bench's setting) -> value: which one depends on the backend
    backend_overrides: dict[tuple[str, str], Any] = field(default_factory=dict)
    stage: dict[str, Any] = field(default_factory=dict)  # stage option key -> value
    flags: dict[str, Any] = field(default_factory=dict)  # the task's own, by name
    # setting -> the flag that gave it, so that a bad value is named as the user typed it
    spelled: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str, default: Any = None) -> Any:
        return self.flags.get(name, default)

    def running(self) -> dict[str, bool]:
        """--print-docker and --dry-run, as commands.run_calls takes them."""
        return {name: bool(self.flags.get(name)) for name in ("print_docker", "dry_run")}


def sort_options(options: Sequence[TaskOption], values: Mapping[str, Any]) -> Given:
    result = Given()
    for option in options:
        value = values.get(option.name, False if option.switch else option.default)
        if option.setting is None and option.stage_key is None:
            result.flags[option.name] = value
            continue
        if not given(value):
            continue
        if option.switch and option.setting:
            value = option.value
        for setting in (option.setting, option.npu_setting):
            if setting:
                result.spelled[setting] = flag_of(option.name)
        if option.npu_setting:
            result.backend_overrides[(option.setting, option.npu_setting)] = value
        elif option.setting:
            result.overrides[option.setting] = value
        else:
            result.stage[option.stage_key] = value
    return result


def task_settings(config: Mapping[str, Any], given_options: Given) -> Settings:
    """invoke.yaml's `pcb` settings with the given options on top; an option whose setting
    depends on the backend (perf's --iterations: perf_iterations, or npu_loop for ais_bench)
    overrides the backend's."""
    overrides = dict(given_options.overrides)
    flags = given_options.spelled
    settings = settings_from_config(config, flags, **overrides)
    if not given_options.backend_overrides:
        return settings
    npu = settings.backend == NPU_BACKEND
    for (setting, npu_setting), value in given_options.backend_overrides.items():
        overrides[npu_setting if npu else setting] = value
    return settings_from_config(config, flags, **overrides)
