"""What every benchmark shares: figures with targets, the config, timing and the machine."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..measure.stability import Spread, spread


@dataclass
class Figure:
    """One reported number; `met` is None for a figure without a target (context only)."""

    name: str
    value: float | None
    unit: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchResult:
    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "figures": [f.to_dict() for f in self.figures],
            "details": self.details,
        }


@dataclass(frozen=True)
class BenchConfig:
    """How much each benchmark measures: `quick_mode()` a smaller run, `full()` about 25 minutes on
    2 cores (1,506 s measured: docs/measurements/bench-2026-12-02-epyc-2core-stop21.json).

    The re-run benchmark takes its demo size and perf settings from invoke.yaml, as
    `invoke full --demo` does, in both modes.
    """

    quick: bool
    threads: int = 0
    # CPU inference: batch sizes timed for onnxruntime and PyTorch, seconds per measurement.
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32)
    min_seconds: float = 3.0
    min_iterations: int = 2
    matmul_sizes: tuple[int, ...] = (2048, 4096)
    # INT8: batch sizes timed for both precisions; demo identities (another seed, held out
    # from calibration) whose images both precisions rank, 0 = the re-run's own 24. Two
    # queries per identity: 500 give the 1,000 queries the 0.5-point top-1 target needs (one
    # changed query is then 0.1 point).
    int8_batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64)
    agreement_identities: int = 500
    # Preprocessing: demo identities drawn for the image set, and timed repetitions.
    preprocess_identities: int = 300
    preprocess_repeats: int = 5
    # Evaluation: queries the plain reference computes distances for (extrapolated to all),
    # and whether the reference ranks every query (identical CMC / mAP) or only those.
    reference_queries: int = 48
    reference_ranks_all: bool = True
    # LoadGen harness: batch sizes swept, Offline repeats per batch size (LoadGen's default
    # rules in full mode, LoadGenRules.quick() in quick mode).
    loadgen_batch_sizes: tuple[int, ...] = (1, 8, 32)
    loadgen_repeats: int = 3
    # torch backend on a CUDA GPU (where there is one): batch sizes timed.
    gpu_batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128, 256)
    # Market-scale pipeline: the fractions of Market-1501's size it runs at (two, to separate
    # fixed from per-image costs, then extrapolated to 1.0); (1.0,) measures the full size.
    market_scales: tuple[float, ...] = (0.02, 0.06)

    @classmethod
    def full(cls, threads: int = 0) -> BenchConfig:
        return cls(quick=False, threads=threads)

    @classmethod
    def quick_mode(cls, threads: int = 0) -> BenchConfig:
        return cls(
            quick=True,
            threads=threads,
            batch_sizes=(8,),
            min_seconds=1.5,
            min_iterations=1,
            matmul_sizes=(3072,),
            int8_batch_sizes=(8,),
            agreement_identities=48,
            preprocess_identities=200,
            preprocess_repeats=2,
            reference_queries=8,
            reference_ranks_all=False,
            market_scales=(0.005, 0.015),
            loadgen_batch_sizes=(1, 8),
            gpu_batch_sizes=(8, 64),
        )


def ratio_figure(
    name: str, value: float | None, minimum: float, unit: str = "x", note: str = ""
) -> Figure:
    met = None if value is None else bool(value >= minimum)
    return Figure(name, value, unit, f">= {minimum:g}", met, note)


def per_batch_ratios(
    rows: list[dict[str, Any]], top: str, bottom: str, label: str = ""
) -> list[Figure]:
    """One figure per batch size: `top`'s images/s over `bottom`'s (the rows' keys are
    <name>_images_per_s), both shown in the note; `label` names the ratio (default
    "top / bottom")."""
    figures = []
    for row in rows:
        high, low = row[f"{top}_images_per_s"], row[f"{bottom}_images_per_s"]
        name = f"bs{row['batch_size']}: {label or f'{top} / {bottom}'}"
        note = f"{high:.1f} vs {low:.1f} img/s"
        rounds = paired_ratio_spread(row, top, bottom)
        if rounds is not None:
            note += f"; round by round {rounds.describe()}"
        figures.append(Figure(name, high / low, "x", note=note))
    return figures


def paired_ratio_spread(row: dict[str, Any], top: str, bottom: str) -> Spread | None:
    """The spread of `top` / `bottom` round by round (each round measured both, one after
    the other, so a slow spell of the machine falls on both), None without rounds."""
    highs, lows = row.get(f"{top}_rounds"), row.get(f"{bottom}_rounds")
    if not highs or not lows or len(highs) != len(lows):
        return None
    return spread([high / low for high, low in zip(highs, lows, strict=True)])


def interleaved_rates(
    funcs: dict[str, Callable[[], Any]],
    items: int,
    min_seconds: float,
    min_iterations: int,
    rounds: int = 3,
) -> dict[str, dict[str, Any]]:
    """Items per second of each function (each call handles `items`), measured side by side.

    After one untimed warm-up call each, the functions take turns for `rounds` rounds of at
    least min_seconds / rounds and min_iterations calls each. Per function: "mean" is the
    rate of its fastest round (calls over the round's time), "best" its fastest single call,
    "rounds" every round's rate in order.
    Taking turns spreads bursts of load from other processes over all contenders, and the
    fastest round is the one least disturbed by them: on a shared machine load only slows.
    """
    for func in funcs.values():
        func()  # warm-up: allocations, thread pools, lazy initialisation
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    round_rates: dict[str, list[float]] = {name: [] for name in funcs}
    budget = min_seconds / rounds
    for _ in range(rounds):
        for name, func in funcs.items():
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < min_iterations or time.perf_counter() - start < budget:
                begin = time.perf_counter()
                func()
                times.append(time.perf_counter() - begin)
            samples[name] += times
            round_rates[name].append(items * len(times) / sum(times))
    return {
        name: {
            "mean": max(round_rates[name]),
            "best": items / min(samples[name]),
            "calls": len(samples[name]),
            "rounds": round_rates[name],
        }
        for name in funcs
    }


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


# The instruction sets that decide fp32 (AVX2 / AVX-512 FMA) and int8 (VNNI, AMX) speed.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    from ..backends.base import resolve_threads
    from ..infer import cpu_name

    flags = cpu_flags()
    versions: dict[str, str | None] = {}
    for module in ("numpy", "onnxruntime", "onnx", "torch", "PIL"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return {
        "cpu": cpu_name(),
        "cores": resolve_threads(0),
        "flags": {flag: flag in flags for flag in SPEED_FLAGS},
        "load_average": load_average(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }
