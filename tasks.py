"""Invoke tasks: build the images, run each stage of the PCB pipeline, or `full` for all.

Settings come from invoke.yaml (`pcb:`); task options override them. Stages run in their
containers unless --local (or `executor: local`). Each stage's task is generated from the same
option table as `python -m pcb <stage>` (pcb/cli/options.py), so it takes every option the
stage does; what each task runs is pcb/orchestration/commands.py.
"""

from __future__ import annotations

from invoke import Exit

from pcb.cli.options import STAGE_NAMES
from pcb.orchestration import commands
from pcb.orchestration import task_options as opts
from pcb.orchestration.invoke_tasks import make_task, settings_task, stage_task
from pcb.version import version_text

# Every stage's task (demo_data, export, ..., trt_infer): the stage's one call, with every
# option the stage takes; report and import-results do more, below.
globals().update(
    {
        stage.replace("-", "_"): stage_task(stage)
        for stage in STAGE_NAMES
        if stage not in ("report", "import-results")
    }
)

report = stage_task(
    "report",
    lambda settings, given: commands.run_report(
        settings, given.flag("runs") or (), given.stage, **given.running()
    ),
    "--runs names each run to compare (results/comparison then holds the comparison).",
)

import_results = stage_task(
    "import-results",
    lambda settings, given: commands.run_import(
        settings,
        given.stage.get("source"),
        batch_size=given.stage.get("batch_size"),
        chips_per_card=given.stage.get("chips_per_card"),
        evaluate=not given.flag("no_evaluate"),
        **given.running(),
    ),
    "Then evaluate its dumps, compare them with onnxruntime's and report.",
)

full = settings_task(
    "full",
    "Every stage in order: [demo-data,] export, preprocess, infer, evaluate, perf, report; "
    "with --chip the Ascend stages (docs/ascend.md), with --trt the TensorRT ones "
    "(docs/tensorrt.md), with --int8 the CPU INT8 platform. With the docker executor the "
    "images the stages need are built first (an image whose content is unchanged is not "
    "rebuilt); --dry-run only prints what would run.",
    opts.FULL,
    lambda settings, given: commands.run_full(
        settings, force=given.flag("force"), **given.running()
    ),
)

trt = settings_task(
    "trt",
    "TensorRT on this host's NVIDIA GPU (docs/tensorrt.md): [int8 calibration,] trtexec "
    "throughput per batch size, GPU inference and its evaluation, parity with onnxruntime (when "
    "the run has onnxruntime's evaluation), report. Needs an exported, preprocessed run.",
    opts.TRT,
    lambda settings, given: commands.run_trt(
        settings, accuracy=not given.flag("no_accuracy"), **given.running()
    ),
)

build = settings_task(
    "build",
    "Build the stage images; an image whose content tag exists is not rebuilt.",
    opts.BUILD,
    lambda settings, given: commands.build_images(
        settings,
        given.flag("image") or (),
        force=given.flag("force"),
        build_args=given.flag("build_arg") or (),
        check=given.flag("check"),
    ),
)

clean = settings_task(
    "clean",
    "Remove leftover pcb containers (stopped, or whose invoke process died) and stale pcb "
    "images (not the current content tag, not :latest); a live run's container is left.",
    opts.CLEAN,
    lambda settings, given: commands.clean(
        settings,
        dry_run=given.flag("dry_run"),
        containers_only=given.flag("containers_only"),
    ),
)

base_image = make_task(
    "base_image",
    "Make the Debian base image with debootstrap, for hosts without registry access (root).",
    opts.BASE_IMAGE,
    lambda c, given: commands.base_image(force=given.flag("force")),
)

locks = make_task(
    "locks",
    "Regenerate the images' hashed lock files (docker/*/requirements*.lock) with uv from "
    "docker/*/requirements.in; needs the package index (docker/README.md).",
    opts.LOCKS,
    lambda c, given: commands.locks(given.flag("image") or (), given.flag("find_links") or ()),
)

version = make_task(
    "version",
    "Print pcb's version and source revision (`invoke --version` is Invoke's own).",
    (),
    lambda c, given: print(version_text()),
)


def _bench(c, given) -> None:
    from pcb.bench.runner import main, task_argv

    flag = given.flag
    argv = task_argv(flag("quick"), flag("only"), flag("threads"), flag("out"), flag("compare"))
    code = main(argv)
    if code:
        raise Exit(code=code)


bench = make_task(
    "bench",
    "Benchmarks: re-run, preprocessing, evaluation at Market scale, CPU fp32 against PyTorch "
    "and the matmul rate, LoadGen, torch, INT8, the pipeline at Market-1501's size; prints a "
    "table and writes results/bench/<date>.json.",
    opts.BENCH,
    _bench,
)
