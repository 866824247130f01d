"""Run the benchmarks in order, print one table, write results/bench/<date>.json."""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..errors import PcbError
from ..fileio import atomic_write_json
from .common import BenchConfig, BenchResult, Figure, load_average, machine
from .compare import compare, read_bench
from .compare import render as render_comparison
from .workspace import DemoRun, prepare_demo_run

# In run order: rerun first, since it must start from nothing and leaves the demo run that
# cpu_inference, loadgen, torch and int8 then reuse; preprocessing next, while this process
# is small (its workers are forks of it) and before the model benchmarks leave thread pools
# behind; market_scale last: the longest, and its stages are processes of their own.
BENCHMARKS = (
    "rerun",
    "preprocessing",
    "evaluation",
    "cpu_inference",
    "loadgen",
    "torch",
    "int8",
    "market_scale",
)
# The demo run these share (made by rerun, or here when rerun is not asked for).
_ON_DEMO_RUN = ("cpu_inference", "loadgen", "torch", "int8")
DEFAULT_OUT = Path("results/bench")


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(BENCHMARKS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise PcbError(
            f"unknown benchmark(s) {', '.join(unknown) or '(none given)'}: choose from "
            f"{', '.join(BENCHMARKS)}, comma-separated"
        )
    return [n for n in BENCHMARKS if n in names]


def _value(figure: Figure) -> str:
    if figure.value is None:
        return "-"
    value = figure.value
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if figure.unit == "" and 0.9 <= value <= 1.0:
        return f"{value:.4f}"  # cosines and fractions near 1 need the digits
    return f"{value:.3g}"


def render_table(results: Sequence[BenchResult]) -> str:
    rows = []
    for result in results:
        if result.error:
            rows.append([result.name, "FAILED", "-", "", "", "no", result.error[:100]])
            continue
        for figure in result.figures:
            met = {True: "met", False: "NOT MET", None: ""}[figure.met]
            rows.append(
                [
                    result.name,
                    figure.name,
                    _value(figure),
                    figure.unit,
                    figure.target,
                    met,
                    figure.note,
                ]
            )
    headers = ["benchmark", "figure", "value", "unit", "target", "met", "note"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _call(name: str, func: Any, log: io.StringIO, quiet: bool) -> tuple[BenchResult, Any]:
    """Run one benchmark with its library chatter captured; a PcbError becomes its result."""
    if not quiet:
        print(f"==> {name}", flush=True)
    start = time.perf_counter()
    extra = None
    try:
        with contextlib.redirect_stdout(log):
            outcome = func()
        result, extra = outcome if isinstance(outcome, tuple) else (outcome, None)
    except PcbError as error:
        result = BenchResult(name, error=str(error))
    result.seconds = time.perf_counter() - start
    if not quiet:
        state = f"failed: {result.error}" if result.error else f"{result.seconds:.1f} s"
        print(f"    {name}: {state}", flush=True)
    return result, extra


def run_bench(
    config: BenchConfig,
    only: Sequence[str] | None = None,
    out_dir: Path = DEFAULT_OUT,
    quiet: bool = False,
    keep: bool = False,
) -> dict[str, Any]:
    """Run the chosen benchmarks; returns the JSON payload it wrote to out_dir/<date>.json."""
    from .cpu_inference import bench_cpu_inference
    from .evaluation import bench_evaluation
    from .int8 import bench_int8
    from .loadgen import bench_loadgen
    from .market_scale import bench_market_scale
    from .preprocessing import bench_preprocessing
    from .rerun import bench_rerun
    from .torch_backend import bench_torch

    names = list(only) if only else list(BENCHMARKS)
    started = datetime.now(timezone.utc)
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="pcb-bench-"))
    log = io.StringIO()
    results: list[BenchResult] = []
    demo: DemoRun | None = None
    total_start = time.perf_counter()
    try:
        for name in names:
            if name == "rerun":
                result, demo = _call(
                    name, lambda: bench_rerun(config, workdir / "rerun"), log, quiet
                )
            elif name in _ON_DEMO_RUN:
                if demo is None:
                    demo = prepare_demo_run(workdir / "demo")
                func = {
                    "cpu_inference": partial(bench_cpu_inference, config, demo),
                    "loadgen": partial(bench_loadgen, config, demo, workdir / "loadgen"),
                    "torch": partial(bench_torch, config, demo),
                    "int8": partial(bench_int8, config, demo, workdir / "int8"),
                }[name]
                result, _ = _call(name, func, log, quiet)
            elif name == "market_scale":
                func = partial(bench_market_scale, config, workdir / "market")
                result, _ = _call(name, func, log, quiet)
            elif name == "preprocessing":
                result, _ = _call(
                    name, lambda: bench_preprocessing(config, workdir / "preprocess"), log, quiet
                )
            else:
                result, _ = _call(name, lambda: bench_evaluation(config), log, quiet)
            results.append(result)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    figures = [f for r in results for f in r.figures if f.met is not None]
    payload: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "mode": "quick" if config.quick else "full",
        "command": "invoke bench" + (" --quick" if config.quick else ""),
        "config": {k: v for k, v in vars(config).items()},
        "machine": {**machine(), "load_average_before": load_before},
        "seconds": round(time.perf_counter() - total_start, 1),
        "targets": {
            "met": sum(1 for f in figures if f.met),
            "total": len(figures),
            "failed_benchmarks": [r.name for r in results if r.error],
        },
        "benchmarks": [r.to_dict() for r in results],
    }
    if keep:
        payload["workdir"] = str(workdir)
    suffix = "-quick" if config.quick else ""
    path = Path(out_dir) / f"{started.date().isoformat()}{suffix}.json"
    atomic_write_json(path, payload)
    payload["path"] = str(path)
    if not quiet:
        print()
        print(render_table(results))
        m = payload["machine"]
        print(
            f"\n{payload['command']}: {payload['seconds']} s on {m['cpu']}, {m['cores']} cores, "
            f"load {load_before} -> {m['load_average']}; targets met "
            f"{payload['targets']['met']}/{payload['targets']['total']}"
        )
        print(f"written: {path}")
    return payload


def task_argv(
    quick: bool,
    only: str | None,
    threads: int | str,
    out: str | Path,
    compare: str | Path | None = None,
) -> list[str]:
    """`invoke bench`'s options as main's command line."""
    argv = ["--threads", str(threads), "--out", str(out)]
    argv += ["--quick"] if quick else []
    argv += ["--only", only] if only else []
    argv += ["--compare", str(compare)] if compare else []
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pcb.bench", description="Benchmarks of the PCB pipeline (issue 8)."
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (about 3 minutes)")
    parser.add_argument("--only", default=None, help=f"comma-separated: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for <date>.json")
    parser.add_argument("--threads", type=int, default=0, help="threads (0 = all cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="OLD.json",
        help="an earlier run's JSON: print every figure beside it as new / old",
    )
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
        config = (BenchConfig.quick_mode if args.quick else BenchConfig.full)(args.threads)
        # Read before the run: a wrong path should fail in a second, not after 20 minutes.
        old = read_bench(args.compare) if args.compare else None
        payload = run_bench(config, only, args.out, keep=args.keep)
        if old is not None:
            payload["compared_with"] = str(args.compare)
            print()
            print(render_comparison(compare(payload, old), payload, old))
    except PcbError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 1 if payload["targets"]["failed_benchmarks"] else 0
