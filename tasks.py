"""Invoke tasks: each stage of the PCB pipeline, and `full` for all of them in order.

Settings come from invoke.yaml (`pcb:`); task options override them.
"""

from __future__ import annotations

from invoke import Exit, task

from pcb.errors import PcbError
from pcb.orchestration.pipeline import full_pipeline, stage_call
from pcb.orchestration.settings import Settings, settings_from_config
from pcb.orchestration.stage import StageCall, run_local

COMMON_HELP = {
    "demo": "use the generated synthetic data and untrained checkpoint (run: results/demo)",
    "local": "run on this host instead of in the stage's container",
    "run": "run folder name under results/ (default from invoke.yaml)",
    "quiet": "no progress bars",
}


def _help(*names: str, **extra: str) -> dict[str, str]:
    return {**{name: COMMON_HELP[name] for name in names}, **extra}


def _settings(c, **overrides) -> Settings:
    config = dict(c.config.get("pcb", {}))
    if overrides.pop("local", False):
        overrides["executor"] = "local"
    return settings_from_config(config, **overrides)


def _execute(settings: Settings, calls: list[StageCall]) -> None:
    for call in calls:
        print(f"==> {call.stage}: python -m pcb {' '.join(call.argv())}", flush=True)
        run_local(call)


def _stage(c, stage: str, **overrides) -> None:
    try:
        settings = _settings(c, **overrides)
        _execute(settings, [stage_call(stage, settings)])
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None


@task(help=_help("local", seed="random seed", identities="identities to draw"))
def demo_data(c, seed=None, identities=None, local=False):
    """Write the synthetic Market-1501-style dataset and untrained checkpoint to data/demo."""
    _stage(c, "demo-data", demo_seed=seed, demo_identities=identities, local=local)


@task(
    help=_help("run", "demo", "local", checkpoint="checkpoint file", static_batch_sizes="e.g. 1,16")
)
def export(c, checkpoint=None, run=None, demo=False, static_batch_sizes=None, local=False):
    """Export the checkpoint to <run>/model/pcb.onnx (opset 11, dynamic batch)."""
    _stage(
        c,
        "export",
        checkpoint=checkpoint,
        run=run,
        demo=demo,
        static_batch_sizes=static_batch_sizes,
        local=local,
    )


@task(
    help=_help(
        "run", "demo", "quiet", "local", dataset="Market-1501 root", workers="processes (0 = all)"
    )
)
def preprocess(c, dataset=None, run=None, demo=False, workers=None, quiet=False, local=False):
    """Preprocess query and gallery images into <run>/bins/<split>/<stem>.bin."""
    _stage(
        c,
        "preprocess",
        dataset=dataset,
        run=run,
        demo=demo,
        workers=workers,
        quiet=quiet,
        local=local,
    )


@task(
    help=_help(
        "run", "demo", "quiet", "local", batch_size="inference batch size", threads="0 = all cores"
    )
)
def infer(c, run=None, demo=False, batch_size=None, threads=None, quiet=False, local=False):
    """Run the bins through the model: one feature dump <stem>_0.bin per image."""
    _stage(
        c,
        "infer",
        run=run,
        demo=demo,
        infer_batch_size=batch_size,
        threads=threads,
        quiet=quiet,
        local=local,
    )


@task(help=_help("run", "demo", "local", dataset="Market-1501 root"))
def evaluate(c, dataset=None, run=None, demo=False, local=False):
    """CMC top-1/5/10 and mAP from the feature dumps (market1501 protocol)."""
    _stage(c, "evaluate", dataset=dataset, run=run, demo=demo, local=local)


@task(
    help=_help(
        "run",
        "demo",
        "quiet",
        "local",
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
):
    """Throughput per batch size."""
    _stage(
        c,
        "perf",
        run=run,
        demo=demo,
        batch_sizes=batch_sizes,
        perf_iterations=iterations,
        threads=threads,
        quiet=quiet,
        local=local,
    )


@task(help=_help("run", "demo", "local"))
def report(c, run=None, demo=False, local=False):
    """Write <run>/report.json and report.md and print the tables."""
    _stage(c, "report", run=run, demo=demo, local=local)


@task(
    help={
        **COMMON_HELP,
        "dataset": "Market-1501 root",
        "checkpoint": "checkpoint file",
        "batch_sizes": "perf batch sizes, e.g. 1,4,8,16,32,64",
        "iterations": "timed batches per batch size",
    }
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
):
    """Every stage in order: [demo-data,] export, preprocess, infer, evaluate, perf, report."""
    try:
        settings = _settings(
            c,
            demo=demo,
            dataset=dataset,
            checkpoint=checkpoint,
            run=run,
            batch_sizes=batch_sizes,
            perf_iterations=iterations,
            quiet=quiet,
            local=local,
        )
        _execute(settings, full_pipeline(settings))
    except PcbError as error:
        raise Exit(f"error: {error}", code=1) from None
