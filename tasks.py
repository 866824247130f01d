"""Invoke tasks: build the images, run each stage of the PCB pipeline, or `full` for all.

Settings come from invoke.yaml (`pcb:`); task options override them. Stages run in their
containers unless --local (or `executor: local`).
"""

from __future__ import annotations

from invoke import Exit, task

from pcb.errors import PcbError
from pcb.orchestration.pipeline import full_pipeline, report_call, stage_call
from pcb.orchestration.settings import Settings, settings_from_config
from pcb.orchestration.stage import StageCall, run_local

COMMON_HELP = {
    "demo": "use the generated synthetic data and untrained checkpoint (run: results/demo)",
    "local": "run on this host instead of in the stage's container",
    "print_docker": "print the equivalent `docker run` command lines instead of running",
    "run": "run folder name under results/ (default from invoke.yaml)",
    "quiet": "no progress bars",
    "chip": "Ascend chip: 310, 310P3, 310B1, ... or auto (npu-smi); adds the NPU stages",
    "devices": "NPU device ids, e.g. 0 or 0,1,2,3 (throughput on all of them at once)",
    "aoe": "also AOE-tune the models (the guide's 310P_aoe column; slow, needs an NPU)",
    "dynamic": "one dynamic-batch model instead of one model per batch size",
    "dry_run": "print every container and command that would run, in order; run nothing",
    "trt": "add the TensorRT stages: trtexec throughput, GPU accuracy (docs/tensorrt.md)",
    "gpus": "GPUs for the TensorRT stages: all (default) or ids, e.g. 0 or 0,1",
    "precision": "TensorRT precision: fp16 (the guide's, default), fp32 or int8 (calibrated)",
    "force": "run the stage(s) even when results/<run>/manifest.json shows them current",
}
ASCEND_FLAGS = ("chip", "devices", "aoe", "dynamic", "dry_run")
TRT_FLAGS = ("gpus", "precision")
STAGE_FLAGS = ("local", "print_docker")
# The stages whose --force means "run again though current" (the report's means otherwise).
FORCEABLE = frozenset(
    {"export", "preprocess", "infer", "evaluate", "perf", "parity", "convert", "trt-calibrate"}
)


def _help(*names: str, **extra: str) -> dict[str, str]:
    return {**{name: COMMON_HELP[name] for name in names}, **extra}


def _settings(c, **overrides) -> Settings:
    config = dict(c.config.get("pcb", {}))
    if overrides.pop("local", False):
        overrides["executor"] = "local"
    return settings_from_config(config, **overrides)


def _build(
    settings: Settings, images: list[str], force: bool = False, build_args: tuple[str, ...] = ()
) -> None:
    from pcb.orchestration.build_inputs import (
        parse_build_args,
        resolve_base_image,
        resolve_ca_bundle,
        resolve_wheels,
    )
    from pcb.orchestration.docker_executor import connect
    from pcb.orchestration.images import build_images, describe

    client = connect()
    results = build_images(
        images,
        client=client,
        base_image=resolve_base_image(settings.base_image, client, images),
        wheels=resolve_wheels(settings.wheels),
        index_url=settings.index_url or None,
        ca_bundle=resolve_ca_bundle(settings.ca_bundle),
        extra_build_args={name: parse_build_args(build_args) for name in images},
        vendor_bases=_vendor_bases(settings, images),
        force=force,
        quiet=settings.quiet,
    )
    for result in results:
        print(describe(result))


def _vendor_bases(settings: Settings, images: list[str]) -> dict[str, tuple[str, str | None]]:
    """The vendor images' bases as the settings choose them: cann by CANN version and chip,
    tensorrt by trt_image (pcb/ascend/cann_images.py, pcb/tensorrt/image_matrix.py)."""
    from pcb.orchestration.ascend_stages import cann_base
    from pcb.tensorrt.image_matrix import tensorrt_image

    bases: dict[str, tuple[str, str | None]] = {}
    if "cann" in images:
        bases["cann"] = cann_base(settings)
    if "tensorrt" in images:
        image = tensorrt_image(settings.trt_image)
        bases["tensorrt"] = (image.reference, image.python)
    return bases


def _check_bases(settings: Settings, images: list[str]) -> None:
    """Each image's base: its registry digest where a registry answers, what is here; builds
    nothing. Exits 1 when a digest could not be had."""
    from pcb.orchestration.docker_executor import connect
    from pcb.orchestration.images import check_base

    client = connect()
    failed = False
    for name in images:
        base = _vendor_bases(settings, [name]).get(name, (None, None))[0]
        result = check_base(client, name, base)
        print(result.describe())
        failed |= result.digest is None
    if failed:
        raise Exit("error: a base's digest could not be had from its registry (see above)", 1)


def _forced(calls: list[StageCall], force: bool) -> list[StageCall]:
    """The calls with --force added where it means "run again even when current"."""
    if not force:
        return calls
    from dataclasses import replace

    return [
        replace(call, args=(*call.args, "--force")) if call.stage in FORCEABLE else call
        for call in calls
    ]


def _execute(settings: Settings, calls: list[StageCall], print_docker: bool = False) -> None:
    if print_docker:
        from pcb.orchestration.docker_executor import docker_run_command

        for call in calls:
            print(
                docker_run_command(
                    call,
                    data_dir=settings.data_dir,
                    results_dir=settings.results_dir,
                    memory_limit=settings.memory_limit,
                )
            )
        return
    if settings.executor == "local":
        for call in calls:
            print(f"==> {call.stage}: python -m pcb {' '.join(call.argv())}", flush=True)
            run_local(call)
        return
    from pcb.orchestration.docker_executor import connect, run_in_container

    client = connect()
    for call in calls:
        print(f"==> {call.stage} [pcb-{call.image}]: {' '.join(call.argv())}", flush=True)
        run_in_container(
            call,
            data_dir=settings.data_dir,
            results_dir=settings.results_dir,
            client=client,
            memory_limit=settings.memory_limit,
        )


def _run_calls(
    settings: Settings, calls: list[StageCall], print_docker: bool = False, dry_run: bool = False
) -> None:
    """Print the plan (--dry-run), or check every NPU stage's host files before the first
    stage runs, then run them."""
    from pcb.orchestration.plan import check_npu_hosts, describe_plan

    if dry_run:
        print("\n".join(describe_plan(calls, settings)))
        return
    if not print_docker:
        check_npu_hosts(calls)
    _execute(settings, calls, print_docker)


def _ascend_settings(c, **overrides) -> Settings:
    """Settings with --chip auto resolved on this host (npu-smi); flags given as False leave
    invoke.yaml's value."""
    from pcb.orchestration.plan import resolve_auto_chip

    for flag in ("aoe", "dynamic"):
        if overrides.get(flag) is False:
            overrides[flag] = None
    settings = _settings(c, **overrides)
    return resolve_auto_chip(settings) if settings.chip else settings


def _stage(c, stage: str, print_docker: bool = False, force: bool = False, **overrides) -> None:
    try:
        settings = _settings(c, **overrides)
        _execute(settings, _forced([stage_call(stage, settings)], force), print_docker)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    help={
        "dry_run": "list what would be removed; remove nothing",
        "containers_only": "leave the images alone",
    }
)
def clean(c, dry_run=False, containers_only=False):
    """Remove leftover pcb containers (stopped, or whose invoke process died) and stale pcb
    images (not the current content tag, not :latest); a live run's container is left."""
    from pcb.orchestration.docker_executor import connect
    from pcb.orchestration.images import PROJECT_ROOT
    from pcb.orchestration.lifecycle import clean as clean_engine

    try:
        settings = _settings(c)
        # A base named in invoke.yaml counts too when telling current image tags from stale.
        bases = () if settings.base_image in ("auto", "offline") else (settings.base_image,)
        report = clean_engine(
            connect(), PROJECT_ROOT, dry_run=dry_run, images=not containers_only, bases=bases
        )
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None
    print("\n".join(report.lines()))


@task(help={"force": "rebuild even when the Debian base image exists"})
def base_image(c, force=False):
    """Make the Debian base image with debootstrap, for hosts without registry access (root)."""
    from pcb.orchestration.base_image import ensure_base_image

    try:
        print(ensure_base_image(force=force).tag)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    iterable=["image", "build_arg"],
    # Several options share first letters (--cann-image, --cann-version, --ca-bundle, --check):
    # long options only.
    auto_shortflags=False,
    help={
        "image": "export, runtime, cann or tensorrt; repeatable (default: export and runtime)",
        "base_image": 'export/runtime base: "auto", "offline" (debootstrap) or an image name',
        "wheels": "a folder of wheels to install from, e.g. one holding the torch CPU wheel",
        "index_url": "the package index pip uses inside the build",
        "ca_bundle": "a CA bundle for pip during the build (left in no layer)",
        "force": "rebuild even when the content tag exists",
        "build_arg": "NAME=VALUE for the Dockerfiles, repeatable (e.g. AIS_BENCH_FIND_LINKS=url)",
        "check": "build nothing: print each image's base and its registry digest, or why none",
        "cann_version": "the cann image's CANN version (a published 310P tag; docs/ascend.md)",
        "cann_image": "the cann image's base, any CANN toolkit image (pcb.cann_image)",
    },
)
def build(
    c,
    image=None,
    base_image=None,
    wheels=None,
    index_url=None,
    ca_bundle=None,
    force=False,
    build_arg=None,
    check=False,
    cann_version=None,
    cann_image=None,
):
    """Build the stage images; an image whose content tag exists is not rebuilt."""
    try:
        settings = _settings(
            c,
            base_image=base_image,
            wheels=wheels,
            index_url=index_url,
            ca_bundle=ca_bundle,
            cann_version=cann_version,
            cann_image=cann_image,
        )
        if check:
            _check_bases(settings, image or ["export", "runtime"])
            return
        _build(settings, image or ["export", "runtime"], force, tuple(build_arg or ()))
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(help=_help(*STAGE_FLAGS, seed="random seed", identities="identities to draw"))
def demo_data(c, seed=None, identities=None, local=False, print_docker=False):
    """Write the synthetic Market-1501-style dataset and untrained checkpoint to data/demo."""
    _stage(c, "demo-data", print_docker, demo_seed=seed, demo_identities=identities, local=local)


@task(
    help=_help(
        "run",
        "demo",
        "force",
        *STAGE_FLAGS,
        checkpoint="checkpoint file",
        static_batch_sizes="e.g. 1,16",
    )
)
def export(
    c,
    checkpoint=None,
    run=None,
    demo=False,
    static_batch_sizes=None,
    local=False,
    print_docker=False,
    force=False,
):
    """Export the checkpoint to <run>/model/pcb.onnx (opset 11, dynamic batch)."""
    _stage(
        c,
        "export",
        print_docker,
        force,
        checkpoint=checkpoint,
        run=run,
        demo=demo,
        static_batch_sizes=static_batch_sizes,
        local=local,
    )


@task(
    help=_help(
        "run",
        "demo",
        "quiet",
        "force",
        *STAGE_FLAGS,
        dataset="Market-1501 root",
        workers="processes (0 = all)",
    )
)
def preprocess(
    c,
    dataset=None,
    run=None,
    demo=False,
    workers=None,
    quiet=False,
    local=False,
    print_docker=False,
    force=False,
):
    """Preprocess query and gallery images into <run>/bins/<split>/<stem>.bin."""
    _stage(
        c,
        "preprocess",
        print_docker,
        force,
        dataset=dataset,
        run=run,
        demo=demo,
        workers=workers,
        quiet=quiet,
        local=local,
    )


@task(
    help=_help(
        "run",
        "demo",
        "quiet",
        "force",
        *STAGE_FLAGS,
        batch_size="inference batch size",
        threads="0 = all cores",
    )
)
def infer(
    c,
    run=None,
    demo=False,
    batch_size=None,
    threads=None,
    quiet=False,
    local=False,
    print_docker=False,
    force=False,
):
    """Run the bins through the model: one feature dump <stem>_0.bin per image."""
    _stage(
        c,
        "infer",
        print_docker,
        force,
        run=run,
        demo=demo,
        infer_batch_size=batch_size,
        threads=threads,
        quiet=quiet,
        local=local,
    )


@task(help=_help("run", "demo", "force", *STAGE_FLAGS, dataset="Market-1501 root"))
def evaluate(c, dataset=None, run=None, demo=False, local=False, print_docker=False, force=False):
    """CMC top-1/5/10 and mAP from the feature dumps (market1501 protocol)."""
    _stage(c, "evaluate", print_docker, force, dataset=dataset, run=run, demo=demo, local=local)


@task(
    help=_help(
        "run",
        "demo",
        "quiet",
        "force",
        *STAGE_FLAGS,
        batch_sizes="e.g. 1,4,8,16,32,64",
        iterations="timed batches",
        threads="0 = all cores",
    )
)
def perf(
    c,
    run=None,
    demo=False,
    batch_sizes=None,
    iterations=None,
    threads=None,
    quiet=False,
    local=False,
    print_docker=False,
    force=False,
):
    """Throughput per batch size."""
    _stage(
        c,
        "perf",
        print_docker,
        force,
        run=run,
        demo=demo,
        batch_sizes=batch_sizes,
        perf_iterations=iterations,
        threads=threads,
        quiet=quiet,
        local=local,
    )


@task(
    iterable=["runs"],
    help=_help(
        "run",
        "demo",
        *STAGE_FLAGS,
        runs="a run to compare: a name under results/ or a folder (repeat for several)",
        out="output folder (default: the run folder, or results/comparison for several)",
        show="latest (default) or all, for a platform and batch measured twice",
        ratios="ratio columns, e.g. Ascend310P3-aoe/T4-trt-fp16,310P_aoe/T4",
        force="compare runs of different checkpoints or datasets anyway",
        no_plots="skip the PNG figures",
    ),
)
def report(
    c,
    run=None,
    demo=False,
    runs=None,
    out=None,
    show=None,
    ratios=None,
    force=False,
    no_plots=False,
    local=False,
    print_docker=False,
):
    """Compare one or more runs: tables, comparison.{md,csv,json}, throughput.png, cmc.png."""
    try:
        settings = _settings(c, run=run, demo=demo, local=local)
        call = report_call(settings, tuple(runs or ()), out, show, ratios, force, not no_plots)
        _execute(settings, [call], print_docker)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(help=_help("run", "demo", *STAGE_FLAGS, quiet="no notes when everything matches"))
def verify(c, run=None, demo=False, quiet=False, local=False, print_docker=False):
    """Read every file of the run again and check it against its manifest.json; exit 1
    naming each file that differs (file, stage, expected and found digest)."""
    try:
        settings = _settings(c, run=run, demo=demo, local=local, quiet=quiet)
        args = ("--run", settings.run_dir, *(("--quiet",) if settings.quiet else ()))
        _execute(settings, [StageCall("verify", "runtime", args)], print_docker)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    help=_help(
        "demo",
        "run",
        "quiet",
        *STAGE_FLAGS,
        *ASCEND_FLAGS,
        "trt",
        *TRT_FLAGS,
        "force",
        int8="also the CPU INT8 platform: quantize, then infer, evaluate, parity, perf at int8",
        dataset="Market-1501 root",
        checkpoint="checkpoint file",
        batch_sizes="perf batch sizes, e.g. 1,4,8,16,32,64",
        iterations="timed batches per batch size",
    )
)
def full(
    c,
    demo=False,
    dataset=None,
    checkpoint=None,
    run=None,
    batch_sizes=None,
    iterations=None,
    quiet=False,
    local=False,
    print_docker=False,
    chip=None,
    devices=None,
    aoe=False,
    dry_run=False,
    dynamic=False,
    trt=False,
    gpus=None,
    precision=None,
    force=False,
    int8=False,
):
    """Every stage in order: [demo-data,] export, preprocess, infer, evaluate, perf, report.

    With --chip (docs/ascend.md): export, preprocess, convert (atc), ais_bench inference and
    evaluation, the onnxruntime reference, parity, ais_bench throughput, report. With the
    docker executor the images the stages need are built first (an image whose content is
    unchanged is not rebuilt); --dry-run only prints what would run. With --trt
    (docs/tensorrt.md) the TensorRT stages join, combinable with --chip.
    """
    try:
        settings = _ascend_settings(
            c,
            demo=demo,
            dataset=dataset,
            checkpoint=checkpoint,
            run=run,
            batch_sizes=batch_sizes,
            perf_iterations=iterations,
            quiet=quiet,
            local=local,
            chip=chip,
            devices=devices,
            aoe=aoe,
            dynamic=dynamic,
            int8=int8 or None,  # not given: invoke.yaml's pcb.int8
            trt=trt or None,  # not given: invoke.yaml's pcb.trt
            gpus=gpus,
            trt_precision=precision,
        )
        calls = _forced(full_pipeline(settings), force)
        if dry_run:
            _run_calls(settings, calls, dry_run=True)
            return
        if not print_docker:
            from pcb.orchestration.plan import check_npu_hosts
            from pcb.tensorrt.plan import check_gpu_host

            # Before building images or running hours of CPU stages.
            check_npu_hosts(calls)
            check_gpu_host(calls, settings.executor)
        if settings.executor == "docker" and not print_docker:
            _build(settings, sorted({call.image for call in calls}))
        _execute(settings, calls, print_docker)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    help=_help(
        "run",
        "demo",
        "quiet",
        *STAGE_FLAGS,
        *ASCEND_FLAGS,
        batch_sizes="one model per batch size, e.g. 1,4,8,16,32,64",
    )
)
def convert(
    c,
    run=None,
    demo=False,
    chip=None,
    batch_sizes=None,
    devices=None,
    aoe=False,
    dry_run=False,
    dynamic=False,
    quiet=False,
    local=False,
    print_docker=False,
):
    """Convert <run>/model/pcb.onnx to .om models with atc (and AOE) in the cann image."""
    from pcb.orchestration.ascend_stages import convert_call

    try:
        settings = _ascend_settings(
            c,
            run=run,
            demo=demo,
            chip=chip,
            batch_sizes=batch_sizes,
            devices=devices,
            aoe=aoe,
            dynamic=dynamic,
            quiet=quiet,
            local=local,
        )
        # The batch sizes asked for, else every one the pipeline loads (perf and infer).
        sizes = list(settings.batch_sizes) if batch_sizes else None
        _run_calls(settings, [convert_call(settings, sizes)], print_docker, dry_run)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    help=_help(
        "run",
        "demo",
        *STAGE_FLAGS,
        "dry_run",
        backend="the backend to compare, e.g. Ascend310P3-ais_bench (default: --chip's)",
        chip="the chip whose ais_bench dumps to compare",
        threshold="count images below this cosine similarity (default 0.99)",
    )
)
def parity(
    c,
    backend=None,
    chip=None,
    threshold=None,
    run=None,
    demo=False,
    local=False,
    print_docker=False,
    dry_run=False,
):
    """A backend's per-image features against onnxruntime's: cosine and top-1 difference."""
    from pcb.orchestration.ascend_stages import npu_backend, parity_call

    try:
        settings = _ascend_settings(
            c, run=run, demo=demo, chip=chip, parity_threshold=threshold, local=local
        )
        name = backend or npu_backend(settings)
        _run_calls(settings, [parity_call(settings, name)], print_docker, dry_run)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    help=_help(
        "run",
        *STAGE_FLAGS,
        "dry_run",
        from_="the benchmark tool's result/ folder (under data/ or results/)",
        chip="the chip it ran on (default 310)",
        batch_size="import only this batch size's perf files",
        chips_per_card="chips per card for the per-card figure (default: 4 for a 310, else 1)",
        dataset="Market-1501 root, to evaluate the imported dumps",
        no_evaluate="import only: no evaluate, parity or report",
    )
)
def import_results(
    c,
    from_,
    run=None,
    chip=None,
    batch_size=None,
    chips_per_card=None,
    dataset=None,
    no_evaluate=False,
    local=False,
    print_docker=False,
    dry_run=False,
):
    """Bring results made by hand with the guide's commands (the old benchmark tool) into a
    run, then evaluate its dumps, compare them with onnxruntime's and report."""
    from pathlib import Path

    from pcb.ascend.import_results import has_dump_folders
    from pcb.orchestration.ascend_stages import (
        evaluate_call,
        import_results_call,
        parity_call,
    )
    from pcb.orchestration.pipeline import report_call

    try:
        settings = _settings(c, run=run, chip=chip, dataset=dataset, local=local)
        source = Path(from_)
        calls = [
            import_results_call(
                settings,
                source,
                None if batch_size is None else int(batch_size),
                None if chips_per_card is None else int(chips_per_card),
            )
        ]
        if not no_evaluate:
            from pcb.ascend.chips import backend_key
            from pcb.orchestration.ascend_stages import import_chip

            key = backend_key(import_chip(settings), "benchmark")
            if has_dump_folders(source):
                calls.append(evaluate_call(settings, key))
                # Parity needs the onnxruntime evaluation of the same run.
                if (settings.run_dir / "eval" / "onnxruntime.json").is_file():
                    calls.append(parity_call(settings, key))
            calls.append(report_call(settings))
        _run_calls(settings, calls, print_docker, dry_run)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    help=_help(
        "run",
        "demo",
        "quiet",
        *STAGE_FLAGS,
        *TRT_FLAGS,
        "dry_run",
        batch_sizes="trtexec batch sizes, e.g. 1,4,8,16,32,64 (default: trt_batch_sizes)",
        batch_size="GPU inference batch size; its engine is built when trt-perf did not time it",
        no_accuracy="throughput only: no GPU inference, evaluation or parity",
    )
)
def trt(
    c,
    run=None,
    demo=False,
    gpus=None,
    precision=None,
    batch_sizes=None,
    batch_size=None,
    no_accuracy=False,
    quiet=False,
    local=False,
    print_docker=False,
    dry_run=False,
):
    """TensorRT on this host's NVIDIA GPU (docs/tensorrt.md): [int8 calibration,] trtexec
    throughput per batch size, GPU inference and its evaluation, parity with onnxruntime (when
    the run has onnxruntime's evaluation), report. Needs an exported, preprocessed run."""
    from dataclasses import replace

    from pcb.orchestration.pipeline import trt_plan
    from pcb.tensorrt.plan import check_gpu_host, reference_ready

    try:
        settings = _settings(
            c,
            run=run,
            demo=demo,
            gpus=gpus,
            trt_precision=precision,
            trt_batch_sizes=batch_sizes,
            infer_batch_size=batch_size,
            quiet=quiet,
            local=local,
        )
        plan = replace(
            trt_plan(settings, parity=reference_ready(settings.run_dir)),
            accuracy=not no_accuracy,
        )
        calls = [*plan.calls(), report_call(settings)]
        if not (dry_run or print_docker):
            # Before building images: a host without the NVIDIA runtime stops here, saying so.
            check_gpu_host(calls, settings.executor)
            if settings.executor == "docker":
                _build(settings, sorted({call.image for call in calls}))
        _run_calls(settings, calls, print_docker, dry_run)
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(
    help={
        "quick": "a smaller run, about 2 minutes on 2 cores (full: about 5)",
        "only": "comma-separated: rerun,preprocessing,evaluation,cpu_inference,loadgen,torch,"
        "int8,market_scale",
        "threads": "0 = all cores",
        "out": "folder for <date>.json (default results/bench)",
        "compare": "an earlier run's <date>.json: print every figure beside it as new / old",
    }
)
def bench(c, quick=False, only=None, threads=0, out="results/bench", compare=None):
    """Benchmarks: re-run, preprocessing, evaluation at Market scale, CPU fp32 against PyTorch
    and the matmul rate, LoadGen, torch, INT8, the pipeline at Market-1501's size; prints a
    table and writes results/bench/<date>.json."""
    from pcb.bench.runner import main

    argv = ["--threads", str(threads), "--out", str(out)]
    argv += ["--quick"] if quick else []
    argv += ["--only", only] if only else []
    argv += ["--compare", str(compare)] if compare else []
    code = main(argv)
    if code:
        raise Exit(code=code)
