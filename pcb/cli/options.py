"""Every stage and every option of every stage, declared once.

`python -m pcb <stage>`'s parser (pcb/cli/parser.py) and the Invoke task of the same name
(pcb/orchestration/tasks.py) are both generated from these tables, so a stage's options cannot
differ between the two. An option names the stages that take it and, where a pipeline run
passes it from invoke.yaml, its `setting` (the key under `pcb:`); a task option that has a
setting overrides that setting, one that has none is handed to the stage as it is.

Where one flag means different things in different stages (`--batch-size` of inference and of
calibration, `--threads` of onnxruntime and of trtexec), each meaning is its own entry; an
entry's `name` is unique.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..constants import DEFAULT_BATCH_SIZES, REFERENCE_BACKEND, TORCH_BACKENDS
from ..measure import DEFAULT_MIN_DURATION_S, DEFAULT_MIN_QUERIES, DEFAULT_REPEATS, PERF_TIMERS
from ..tensorrt.engine_cache import CALIBRATION_BATCH, CALIBRATION_IMAGES
from ..tensorrt.trtexec import DEFAULT_PRECISION, PRECISIONS, TRTEXEC
from ..tensorrt.trtexec_output import DEFAULT_TOLERANCE
from .types import (
    backend_name,
    chip_arg,
    devices_arg,
    non_negative_float,
    non_negative_int,
    parse_batch_sizes,
    positive_int,
    threshold_arg,
)


@dataclass(frozen=True)
class Stage:
    name: str
    help: str  # one sentence: the parser's sub-command help and the Invoke task's


STAGES = (
    Stage("demo-data", "Write a synthetic Market-1501-style dataset and an untrained checkpoint."),
    Stage("export", "Export the checkpoint to <run>/model/pcb.onnx (opset 11, dynamic batch)."),
    Stage("preprocess", "Preprocess query and gallery images into <run>/bins/<split>/<stem>.bin."),
    Stage("infer", "Run the bins through the model: one feature dump <stem>_0.bin per image."),
    Stage("evaluate", "CMC top-1/5/10 and mAP from the feature dumps (market1501 protocol)."),
    Stage("perf", "Throughput per batch size."),
    Stage(
        "quantize",
        "pcb.onnx -> model/pcb_int8.onnx: static INT8 (QDQ, per-channel) on the run's bins.",
    ),
    Stage(
        "convert",
        "Convert <run>/model/pcb.onnx to one .om model per batch size with atc (and AOE), for "
        "an Ascend NPU.",
    ),
    Stage(
        "parity",
        "A backend's per-image features against onnxruntime's: cosine and top-1 difference.",
    ),
    Stage(
        "import-results",
        "Bring the old benchmark tool's perf files and dumps (the guide's commands) into a run.",
    ),
    Stage(
        "report",
        "Compare one or more runs: tables, comparison.{md,csv,json}, throughput.png, cmc.png.",
    ),
    Stage(
        "verify",
        "Read every file of a run again and check it against its manifest.json; exit 1 naming "
        "each file that differs.",
    ),
    Stage(
        "trt-calibrate",
        "The int8 calibration cache from the preprocessed bins (TensorRT Python API).",
    ),
    Stage("trt-perf", "trtexec throughput per batch size (engines saved and reused)."),
    Stage("trt-infer", "Bins -> feature dumps through the TensorRT engine, on the GPU."),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
TRT_STAGES = ("trt-calibrate", "trt-perf", "trt-infer")


@dataclass(frozen=True, eq=False)  # each entry is one of a kind: compared (and hashed) by identity
class Option:
    """One option of one or more stages: its argparse declaration and its invoke.yaml setting."""

    name: str  # unique in OPTIONS
    flag: str
    stages: tuple[str, ...]
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    action: str | None = None  # "store_true" or "append"
    choices: tuple[str, ...] | None = None
    required: bool = False
    dest: str | None = None  # the parsed attribute, when not the flag's name
    # The invoke.yaml key (under pcb:) a pipeline passes this option from; None: it has none.
    setting: str | None = None
    # The setting of the ais_bench backend's run of the same stage, where it is another one.
    npu_setting: str | None = None
    stage_help: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The attribute argparse stores it under."""
        return self.dest or self.flag[2:].replace("-", "_")

    @property
    def is_switch(self) -> bool:
        return self.action == "store_true"

    def help_in(self, stage: str) -> str:
        return self.stage_help.get(stage, self.help)

    def argparse_kwargs(self, stage: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"help": self.help_in(stage)}
        if self.is_switch:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=self.type, default=self.default)
            if self.action:
                kwargs["action"] = self.action
            if self.choices:
                kwargs["choices"] = list(self.choices)
        if self.required:
            kwargs["required"] = True
        if self.dest:
            kwargs["dest"] = self.dest
        return kwargs


def _batch_sizes(name: str, stage: str, setting: str | None, help: str = "") -> Option:
    """A stage's --batch-sizes: one measurement (or model) per size."""
    return Option(
        name,
        "--batch-sizes",
        (stage,),
        help or "comma-separated, default 1,4,8,16,32,64",
        type=parse_batch_sizes,
        default=list(DEFAULT_BATCH_SIZES),
        setting=setting,
    )


RUN_STAGES = (
    "export",
    "preprocess",
    "infer",
    "evaluate",
    "perf",
    "quantize",
    "convert",
    "parity",
    "import-results",
    "verify",
    *TRT_STAGES,
)
# The stages whose --force means "run it again though the manifest shows it current"; the
# report's --force means "compare anyway" (REPORT_FORCE).
_NOT_FORCEABLE = ("import-results", "verify", "trt-perf", "trt-infer")
FORCEABLE = tuple(stage for stage in RUN_STAGES if stage not in _NOT_FORCEABLE)
FORCE_HELP = (
    "run it again even when <run>/manifest.json shows it complete with the same inputs and "
    "options and its outputs unchanged"
)
QUIET_STAGES = ("preprocess", "infer", "evaluate", "perf", "quantize", "convert", *TRT_STAGES)
TRT_RUN = "run folder, e.g. results/market (exported)"
CHIP_HELP = "Ascend chip, the Name column of `npu-smi info` (310, 310P3, 310B1, ...) or auto"
CUDA_DEVICE = "CUDA device index as this process sees it (0 in a container: the first GPU given)"

OPTIONS: tuple[Option, ...] = (
    # ---- where: the run, its inputs --------------------------------------------------------
    Option(
        "run",
        "--run",
        RUN_STAGES,
        "run folder, e.g. results/demo (created)",
        type=Path,
        required=True,
        setting="run",
        stage_help={stage: TRT_RUN for stage in TRT_STAGES},
    ),
    Option(
        "report_runs",
        "--run",
        ("report",),
        "run folder, from this host or copied from another; repeat to compare several",
        type=Path,
        action="append",
        required=True,
        setting="run",
    ),
    Option(
        "dataset",
        "--dataset",
        ("preprocess", "evaluate"),
        "Market-1501 root: the Market-1501-v15.09.15 folder or a folder holding it",
        type=Path,
        required=True,
        setting="dataset",
    ),
    Option(
        "checkpoint",
        "--checkpoint",
        ("export",),
        "PCB_3_7.pt or similar",
        type=Path,
        required=True,
        setting="checkpoint",
    ),
    # ---- demo-data ---------------------------------------------------------------------------
    Option(
        "out",
        "--out",
        ("demo-data",),
        "folder to write, e.g. data/demo",
        type=Path,
        required=True,
    ),
    Option(
        "seed",
        "--seed",
        ("demo-data",),
        "random seed of the images and weights",
        type=int,
        default=0,
        setting="demo_seed",
    ),
    Option(
        "identities",
        "--identities",
        ("demo-data",),
        "identities to draw",
        type=positive_int,
        default=24,
        setting="demo_identities",
    ),
    # ---- export, quantize ----------------------------------------------------------------------
    Option(
        "static_batch_sizes",
        "--static-batch-sizes",
        ("export",),
        "also write one static model per batch size, e.g. 1,16",
        type=parse_batch_sizes,
        setting="static_batch_sizes",
    ),
    Option(
        "opset",
        "--opset",
        ("export",),
        "ONNX opset (the guide's: 11)",
        type=positive_int,
        default=11,
    ),  # fmt: skip
    Option(
        "calibration_images",
        "--calibration-images",
        ("quantize",),
        "bins to calibrate on (default: as recorded, else 64)",
        type=positive_int,
    ),
    # ---- preprocess ------------------------------------------------------------------------------
    Option(
        "workers",
        "--workers",
        ("preprocess",),
        "processes (0 = all cores)",
        type=non_negative_int,
        default=0,
        setting="workers",
    ),
    Option(
        "skip_bad_images",
        "--skip-bad-images",
        ("preprocess",),
        "leave out images that cannot be used (corrupt, empty, not 8-bit, over 4096 x 4096 "
        "pixels, not JPEG, dangling links, names with control characters or spaces) instead of "
        "stopping; they are listed in bins/<split>.skipped.json, left out of the evaluation and "
        "counted in the report",
        action="store_true",
    ),
    # ---- infer, perf: the backend --------------------------------------------------------------
    Option(
        "backend",
        "--backend",
        ("infer", "perf"),
        "inference backend (ais_bench: an Ascend NPU, needs --chip; torch, torch-bf16, "
        "torch-fp16: PyTorch, on a CUDA GPU where there is one, fp16 only there)",
        default="onnxruntime",
        choices=("onnxruntime", "ais_bench", *TORCH_BACKENDS),
        setting="backend",
    ),
    Option(
        "dumps_backend",
        "--backend",
        ("evaluate",),
        "whose dumps: onnxruntime, or a name the infer stage printed, e.g. Ascend310P3-ais_bench",
        type=backend_name,
        default=REFERENCE_BACKEND,
        setting="backend",
    ),
    Option(
        "precision",
        "--precision",
        ("infer", "perf"),
        "onnxruntime on the CPU: fp32 (pcb.onnx) or int8 (model/pcb_int8.onnx, static QDQ "
        "quantisation calibrated on the run's bins; made by `quantize` or on first use)",
        default="fp32",
        choices=("fp32", "int8"),
    ),
    Option(
        "batch_size",
        "--batch-size",
        ("infer",),
        "images per batch",
        type=positive_int,
        default=16,
        setting="infer_batch_size",
    ),
    Option(
        "threads",
        "--threads",
        ("infer", "perf"),
        "intra-op threads (0 = all cores)",
        type=non_negative_int,
        default=0,
        setting="threads",
    ),
    _batch_sizes("batch_sizes", "perf", "batch_sizes"),
    # No setting: a pipeline converts every batch size it loads a model for (perf's and
    # infer's), `invoke convert --batch-sizes` exactly those given.
    _batch_sizes(
        "convert_batch_sizes",
        "convert",
        None,
        "one model per batch size (the gears of --dynamic), default 1,4,8,16,32,64",
    ),
    Option(
        "warmup",
        "--warmup",
        ("perf",),
        "untimed batches",
        type=non_negative_int,
        default=1,
        setting="perf_warmup",
        npu_setting="npu_warmup",
    ),
    Option(
        "iterations",
        "--iterations",
        ("perf",),
        "timed batches per batch size (--timer fixed; ais_bench's --loop)",
        type=positive_int,
        default=5,
        setting="perf_iterations",
        npu_setting="npu_loop",
    ),
    # How the in-process backends are timed (ais_bench times itself: these do not apply).
    Option(
        "timer",
        "--timer",
        ("perf",),
        "loadgen: MLPerf LoadGen's Offline (repeated) and SingleStream scenarios under its run "
        "rules (--min-duration, --min-queries); fixed: --iterations batches per batch size",
        default=PERF_TIMERS[0],
        choices=PERF_TIMERS,
        setting="perf_timer",
    ),
    Option(
        "min_duration",
        "--min-duration",
        ("perf",),
        "LoadGen: seconds each scenario runs at least (LoadGen's own default: 10)",
        type=non_negative_float,
        default=DEFAULT_MIN_DURATION_S,
        setting="perf_min_duration",
    ),
    Option(
        "min_queries",
        "--min-queries",
        ("perf",),
        "LoadGen: queries each scenario issues at least (LoadGen's own default: 100)",
        type=positive_int,
        default=DEFAULT_MIN_QUERIES,
        setting="perf_min_queries",
    ),
    Option(
        "repeats",
        "--repeats",
        ("perf",),
        "LoadGen: Offline runs per batch size; their spread says whether the figure is stable",
        type=positive_int,
        default=DEFAULT_REPEATS,
        setting="perf_repeats",
    ),
    # ---- Ascend ---------------------------------------------------------------------------------
    Option(
        "chip",
        "--chip",
        ("infer", "perf"),
        CHIP_HELP,
        type=chip_arg,
        setting="chip",
    ),
    Option(
        "convert_chip",
        "--chip",
        ("convert",),
        CHIP_HELP,
        type=chip_arg,
        required=True,
        setting="chip",
    ),
    Option(
        "device",
        "--device",
        ("infer", "convert"),
        "ais_bench: the NPU device id",
        type=non_negative_int,
        default=0,
        setting="devices",
        stage_help={"convert": "the NPU AOE tunes on"},
    ),
    Option(
        "devices",
        "--devices",
        ("perf",),
        "ais_bench: NPU device ids timed at the same time, e.g. 0 or 0,1,2,3",
        type=devices_arg,
        default=(0,),
        setting="devices",
    ),
    *(
        Option(
            name,
            f"--{name}",
            ("infer", "perf", "convert"),
            f"ais_bench: the {model} model pcb{suffix}.om",
            action="store_true",
            setting=name,
            stage_help={"convert": convert_help},
        )
        for name, model, suffix, convert_help in (
            (
                "aoe",
                "AOE-tuned",
                "_bs<N>_aoe",
                "also AOE-tune each one: pcb_bs<N>_aoe.om (needs an NPU)",
            ),
            (
                "dynamic",
                "dynamic-batch",
                "_dynamic",
                "one dynamic-batch model pcb_dynamic.om instead",
            ),
        )
    ),
    Option(
        "source",
        "--from",
        ("import-results",),
        "the tool's result/ folder (or the folder holding it)",
        type=Path,
        required=True,
        dest="source",
    ),
    Option(
        "import_chip",
        "--chip",
        ("import-results",),
        "the chip it ran on (default 310)",
        type=chip_arg,
        default="310",
        setting="chip",
    ),
    Option(
        "import_batch_size",
        "--batch-size",
        ("import-results",),
        "import this batch size's files only",
        type=positive_int,
    ),
    Option(
        "chips_per_card",
        "--chips-per-card",
        ("import-results",),
        "for the per-card figure (default: 4 for a 310, else 1; 2 for an Atlas 300I Duo)",
        type=positive_int,
    ),
    # ---- evaluate, parity ------------------------------------------------------------------------
    Option(
        "parity_backend",
        "--backend",
        ("parity",),
        "whose features to compare, e.g. Ascend310P3-ais_bench",
        type=backend_name,
        required=True,
    ),
    Option(
        "reference",
        "--reference",
        ("parity",),
        "the backend compared against",
        type=backend_name,
        default=REFERENCE_BACKEND,
    ),
    Option(
        "threshold",
        "--threshold",
        ("parity",),
        "count the images whose cosine similarity is below this (default 0.99)",
        type=threshold_arg,
        default=0.99,
        setting="parity_threshold",
    ),
    Option(
        "dumps",
        "--dumps",
        ("evaluate", "parity"),
        "folder holding query/ and gallery/ dumps (default: <run>/dumps/<backend>)",
        type=Path,
        stage_help={"parity": "the backend's dump folder, if not the run's"},
    ),
    Option(
        "ap_ties",
        "--ap-ties",
        ("evaluate",),
        "AP with gallery entries at equal distance ranked one by one (ranked, the default) or "
        "as one threshold (grouped: sklearn's average_precision_score, what the upstream "
        "evaluation prints); equal without ties",
        default="ranked",
        choices=("ranked", "grouped"),
        setting="ap_ties",
    ),
    # ---- report ----------------------------------------------------------------------------------
    Option(
        "report_out",
        "--out",
        ("report",),
        "output folder (default: the run folder for one run, results/comparison for several)",
        type=Path,
    ),
    Option(
        "show",
        "--show",
        ("report",),
        "a platform and batch measured by several runs: show the latest, or each in its own "
        "column (both are kept in comparison.json either way)",
        default="latest",
        choices=("latest", "all"),
    ),
    Option(
        "ratios",
        "--ratios",
        ("report",),
        "ratio columns A/B,C/D over platform names or published columns, e.g. "
        "Ascend310P3-aoe/T4-trt-fp16,310P_aoe/T4 (default: every NPU over every GPU measured)",
    ),
    Option(
        "report_force",
        "--force",
        ("report",),
        "compare runs of different checkpoints or datasets anyway (the report says so)",
        action="store_true",
    ),
    Option("no_plots", "--no-plots", ("report",), "skip the PNG figures", action="store_true"),
    # ---- TensorRT --------------------------------------------------------------------------------
    Option(
        "trt_precision",
        "--precision",
        ("trt-perf", "trt-infer"),
        "engine precision: fp16 (the guide's, default), fp32, int8 (after trt-calibrate)",
        default=DEFAULT_PRECISION,
        choices=tuple(PRECISIONS),
        setting="trt_precision",
    ),
    Option("cuda_device", "--device", TRT_STAGES, CUDA_DEVICE, type=non_negative_int, default=0),
    Option(
        "calib_images",
        "--images",
        ("trt-calibrate",),
        f"images to calibrate with, spread over gallery and query (default {CALIBRATION_IMAGES})",
        type=positive_int,
        default=CALIBRATION_IMAGES,
        setting="trt_calib_images",
    ),
    Option(
        "calib_batch_size",
        "--batch-size",
        ("trt-calibrate",),
        "calibration batch",
        type=positive_int,
        default=CALIBRATION_BATCH,
    ),
    _batch_sizes("trt_batch_sizes", "trt-perf", "trt_batch_sizes"),
    Option(
        "trt_batch_size",
        "--batch-size",
        ("trt-infer",),
        "images per batch; the engine of this batch size is used (built when missing)",
        type=positive_int,
        default=16,
        setting="infer_batch_size",
    ),
    Option(
        "warmup_ms", "--warmup-ms", ("trt-perf",), "trtexec --warmUp (200)", type=non_negative_int
    ),  # fmt: skip
    Option(
        "duration",
        "--duration",
        ("trt-perf",),
        "trtexec --duration in s (3)",
        type=non_negative_int,
    ),  # fmt: skip
    Option(
        "trt_iterations",
        "--iterations",
        ("trt-perf",),
        "trtexec --iterations (10)",
        type=non_negative_int,
    ),  # fmt: skip
    Option(
        "trt_threads",
        "--threads",
        ("trt-perf",),
        "trtexec --threads, as the guide passed it",
        action="store_true",
    ),
    Option(
        "tolerance",
        "--tolerance",
        ("trt-perf",),
        "allowed relative gap between 1000 x batch / mean GPU ms and qps x batch (0.10)",
        type=non_negative_float,
        default=DEFAULT_TOLERANCE,
    ),
    Option(
        "strict",
        "--strict",
        ("trt-perf",),
        "fail when the gap exceeds the tolerance, or trtexec's JSON and text disagree",
        action="store_true",
    ),
    Option(
        "profile",
        "--profile",
        ("trt-perf",),
        "also export trtexec's per-layer profile (a separate profiling run, TensorRT 7.2+)",
        action="store_true",
    ),
    Option(
        "workspace_mib",
        "--workspace-mib",
        ("trt-perf",),
        "cap the builder's workspace (--workspace before TensorRT 8.4, --memPoolSize from)",
        type=positive_int,
    ),
    Option("rebuild", "--rebuild", ("trt-perf",), "ignore saved engines", action="store_true"),
    Option(
        "trtexec",
        "--trtexec",
        ("trt-perf", "trt-infer"),
        "the trtexec program (default: the one on the PATH)",
        default=TRTEXEC,
    ),
    # ---- how: loudness, running again ------------------------------------------------------------
    Option(
        "quiet",
        "--quiet",
        (*QUIET_STAGES, "verify"),
        "no progress (bars on a terminal, lines elsewhere)",
        action="store_true",
        setting="quiet",
        stage_help={"verify": "no notes on a clean run"},
    ),
    Option(
        "force",
        "--force",
        FORCEABLE,
        FORCE_HELP,
        action="store_true",
        stage_help={
            "preprocess": FORCE_HELP + " (every bin is recomputed)",
            "infer": FORCE_HELP + " (every dump is recomputed)",
            "perf": FORCE_HELP + " (measures again)",
            "convert": "convert even when up to date",
            "trt-calibrate": "recalibrate even when current",
        },
    ),
)

BY_NAME = {option.name: option for option in OPTIONS}


def stage_options(stage: str) -> tuple[Option, ...]:
    """The options `stage` takes, in the order its --help lists them."""
    if stage not in STAGE_NAMES:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_NAMES)}")
    return tuple(option for option in OPTIONS if stage in option.stages)


def stage_option(stage: str, key: str) -> Option:
    """The option of `stage` stored under `key` (its argparse attribute)."""
    for option in stage_options(stage):
        if option.key == key:
            return option
    raise KeyError(f"stage {stage} has no option {key!r}")


def stage_help(stage: str) -> str:
    return next(s.help for s in STAGES if s.name == stage)
