"""LoadGen as the perf harness: validity, stability and its overhead, on the demo model.

The onnxruntime fp32 backend is measured by the LoadGen sweep the perf stage uses
(pcb.measure.perf_loadgen: Offline repeats at every batch size, SingleStream at batch 1), and, side
by side at the same batch sizes, by the bench's own interleaved timer (the rate of its
fastest round). LoadGen's fastest Offline repeat over that timer's fastest round says what the
harness costs (like against like: the least disturbed run of each, so load from other work
does not pass for overhead): a SUT that runs each query in LoadGen's thread should lose
almost nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..backends import create_backend
from ..backends.base import resolve_threads
from ..errors import PcbError
from .common import BenchConfig, BenchResult, Figure, interleaved_rates, ratio_figure
from .workspace import DemoRun

TARGET_OVERHEAD_RATIO = 0.9


def bench_loadgen(config: BenchConfig, run: DemoRun, workdir: Path | None = None) -> BenchResult:
    from ..measure.loadgen_harness import LoadGenRules
    from ..measure.perf_loadgen import MeasureSettings, input_pool, sweep

    threads = resolve_threads(config.threads)
    engine = create_backend("onnxruntime")
    engine.load(run.layout.onnx_path, None, threads)
    bins = list(run.layout.bins_dir("gallery").glob("*.bin"))
    pool, described = input_pool(bins)
    rules = LoadGenRules.quick() if config.quick else LoadGenRules.loadgen_defaults()
    settings = MeasureSettings(rules=rules, repeats=config.loadgen_repeats, warmup=2)
    logs = Path(workdir or tempfile.mkdtemp(prefix="pcb-bench-loadgen-")) / "logs"
    measured = sweep(engine.run, pool, config.loadgen_batch_sizes, settings, logs)
    if not measured:
        raise PcbError("the LoadGen sweep measured nothing")
    best = max(measured, key=lambda m: m.images_per_s)
    batch = pool[: best.batch_size] if len(pool) >= best.batch_size else pool
    own = interleaved_rates(
        {"timer": lambda b=batch: engine.run(b)},
        len(batch),
        config.min_seconds,
        config.min_iterations,
    )["timer"]["mean"]
    fastest_offline = max((r.images_per_s for r in best.offline), default=best.images_per_s)
    valid = sum(1 for m in measured for r in m.runs if r.valid)
    total = sum(len(m.runs) for m in measured)
    stable = sum(1 for m in measured if m.throughput and m.throughput.stable)
    single = next((m.single_stream for m in measured if m.single_stream), None)
    result = BenchResult("loadgen")
    result.figures = [
        *[
            Figure(
                f"bs{m.batch_size}: Offline images/s (median of {len(m.offline)})",
                m.images_per_s,
                "img/s",
                note=m.throughput.describe() if m.throughput else "",
            )
            for m in measured
        ],
        Figure(
            "LoadGen runs VALID by its rules",
            float(valid),
            f"of {total}",
            f"= {total}",
            valid == total,
            note=f"rules: {rules.name}, min {rules.min_duration_ms} ms, "
            f"{rules.min_query_count} queries",
        ),
        Figure(
            "batch sizes with a stable throughput",
            float(stable),
            f"of {len(measured)}",
            f"= {len(measured)}",
            stable == len(measured),
            note=f"max/min of {config.loadgen_repeats} Offline repeats <= 1.10 (perf_analyzer)",
        ),
        ratio_figure(
            "LoadGen Offline / own timer, best batch",
            fastest_offline / own,
            TARGET_OVERHEAD_RATIO,
            "",
            note=f"batch {best.batch_size}: fastest Offline repeat {fastest_offline:.1f} vs "
            f"fastest own round {own:.1f} img/s",
        ),
    ]
    if single is not None:
        summary = single.summary
        p50, p90, p99 = (summary.percentile_ms(p) for p in (50, 90, 99))
        result.figures.append(
            Figure(
                f"SingleStream bs{single.batch_size} p50 / p90 / p99",
                p90,
                "ms",
                note=f"p50 {p50:.1f}, p90 {p90:.1f}, p99 {p99:.1f} ms; "
                f"{'VALID' if single.valid else 'INVALID'}",
            )
        )
    result.details = {
        "threads": threads,
        "input": described,
        "settings": settings.to_dict(),
        "own_timer_images_per_s": own,
        "per_batch": [
            {
                "batch_size": m.batch_size,
                "images_per_s": m.images_per_s,
                "valid": m.valid,
                "spread": m.throughput.to_dict() if m.throughput else None,
                "load": m.load.to_dict() if m.load else None,
                "offline_reruns": m.reruns,
                "runs": [r.to_dict() for r in m.runs],
            }
            for m in measured
        ],
    }
    return result
