"""The pipeline's stages as StageCalls, in order, from Settings."""

from __future__ import annotations

from .settings import DEMO_DIR, Settings
from .stage import StageCall

STAGES = ("demo-data", "export", "preprocess", "infer", "evaluate", "perf", "report")


def _join(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def _quiet(settings: Settings) -> tuple[str, ...]:
    return ("--quiet",) if settings.quiet else ()


def stage_call(stage: str, settings: Settings) -> StageCall:
    run = settings.run_dir
    if stage == "demo-data":
        # The export image: writing the demo checkpoint needs torch.
        return StageCall(
            stage,
            "export",
            (
                "--out",
                DEMO_DIR,
                "--seed",
                str(settings.demo_seed),
                "--identities",
                str(settings.demo_identities),
            ),
            writes_data=True,
        )
    if stage == "export":
        args: tuple = ("--checkpoint", settings.checkpoint, "--run", run)
        if settings.static_batch_sizes:
            args += ("--static-batch-sizes", _join(settings.static_batch_sizes))
        return StageCall(stage, "export", args)
    if stage == "preprocess":
        return StageCall(
            stage,
            "runtime",
            (
                "--dataset",
                settings.dataset,
                "--run",
                run,
                "--workers",
                str(settings.workers),
                *_quiet(settings),
            ),
        )
    if stage == "infer":
        return StageCall(
            stage,
            "runtime",
            (
                "--run",
                run,
                "--backend",
                settings.backend,
                "--batch-size",
                str(settings.infer_batch_size),
                "--threads",
                str(settings.threads),
                *_quiet(settings),
            ),
        )
    if stage == "evaluate":
        return StageCall(
            stage,
            "runtime",
            ("--dataset", settings.dataset, "--run", run, "--backend", settings.backend),
        )
    if stage == "perf":
        return StageCall(
            stage,
            "runtime",
            (
                "--run",
                run,
                "--backend",
                settings.backend,
                "--batch-sizes",
                _join(settings.batch_sizes),
                "--warmup",
                str(settings.perf_warmup),
                "--iterations",
                str(settings.perf_iterations),
                "--threads",
                str(settings.threads),
                *_quiet(settings),
            ),
        )
    if stage == "report":
        return StageCall(stage, "runtime", ("--run", run))
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def full_pipeline(settings: Settings) -> list[StageCall]:
    """Every stage `invoke full` runs; demo-data only for a demo run."""
    stages = STAGES if settings.demo else STAGES[1:]
    return [stage_call(stage, settings) for stage in stages]
