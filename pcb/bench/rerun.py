"""Re-run: the `invoke full --demo --local` stages twice, nothing changed in between.

The stage calls come from the pipeline itself (`full_pipeline` with invoke.yaml's settings,
demo and local), each run as `python -m pcb <stage> ...` in its own process as the local
executor runs it, with a temporary folder as working directory so data/demo and results/demo
are fresh and the repository's own are untouched. The first run starts from nothing (the
demo data is drawn too); the second must take 5 % of its time or less: every stage finds its
outputs current (export compares md5s, preprocess / infer keep complete files, perf keeps a
measurement of the same model and settings on this host unless --force).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..layout import RunLayout
from .common import BenchConfig, BenchResult, Figure
from .workspace import DemoRun

TARGET_FRACTION = 0.05
REPO_ROOT = Path(__file__).resolve().parents[2]


def demo_settings() -> Any:
    """invoke.yaml's `pcb` settings as `invoke full --demo --local` sees them."""
    from ..orchestration.settings import Settings, project_config, settings_from_config

    try:
        return settings_from_config(
            project_config(REPO_ROOT), demo=True, executor="local", quiet=True
        )
    except PcbError:
        return Settings(executor="local", quiet=True).for_demo()


def _run_stages(calls: list[Any], cwd: Path, log: Path) -> list[tuple[str, float]]:
    times = []
    with open(log, "a", encoding="utf-8") as out:
        for call in calls:
            command = [sys.executable, "-m", "pcb", *call.argv()]
            start = time.perf_counter()
            done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
            times.append((call.stage, time.perf_counter() - start))
            if done.returncode != 0:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise PcbError(
                    f"stage {call.stage} failed (exit {done.returncode}) in the re-run "
                    f"benchmark; its output ends with:\n{tail}"
                )
    return times


def bench_rerun(config: BenchConfig, workdir: Path | None = None) -> tuple[BenchResult, DemoRun]:
    """Time the demo pipeline twice; returns the result and the run it left (for reuse)."""
    from ..orchestration.pipeline import full_pipeline

    root = Path(workdir or tempfile.mkdtemp(prefix="pcb-bench-rerun-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = demo_settings()
    calls = full_pipeline(settings)
    log = root / "pipeline.log"
    first = _run_stages(calls, root, log)
    second = _run_stages(calls, root, log)
    first_s = sum(t for _, t in first)
    second_s = sum(t for _, t in second)
    fraction = second_s / first_s
    without_perf = [sum(t for stage, t in run if stage != "perf") for run in (first, second)]
    result = BenchResult("rerun")
    result.figures = [
        Figure("first run", first_s, "s"),
        Figure("second run", second_s, "s"),
        Figure(
            "second / first",
            fraction,
            "",
            f"<= {TARGET_FRACTION:g}",
            bool(fraction <= TARGET_FRACTION),
            f"stages: {', '.join(c.stage for c in calls)}",
        ),
        Figure(
            "second / first, perf left out of both",
            without_perf[1] / without_perf[0],
            "",
            note="context: the pipeline without its one long measurement",
        ),
    ]
    result.details = {
        "workdir": str(root),
        "commands": [f"python -m pcb {' '.join(c.argv())}" for c in calls],
        "first_s": {stage: round(t, 3) for stage, t in first},
        "second_s": {stage: round(t, 3) for stage, t in second},
    }
    run = DemoRun(
        dataset_root=root / settings.dataset,
        checkpoint=root / settings.checkpoint,
        layout=RunLayout(root / settings.run_dir),
    )
    return result, run
