"""ais_bench (`python3 -m ais_bench`): its command line and its two summaries of a run.

A run prints a summary block,

    [INFO] -----------------Performance Summary------------------
    [INFO] H2D_latency (ms): min = 1.6, max = 4.2, mean = 1.9, median = 1.8, percentile(99%) = 4.1
    [INFO] NPU_compute_time (ms): min = 8, max = 9, mean = 8.2, median = 8.2, percentile(99%) = 8.5
    [INFO] D2H_latency (ms): min = ...
    [INFO] throughput 1000*batchsize.mean(16)/NPU_compute_time.mean(8.2): 1951.2

(H2D / D2H only with --display_all_summary; older versions print `batchsize(16)`), and writes
`<output>/<YYYY_MM_DD-HH_MM_SS>_summary.json` beside the folder of the same name that holds the
outputs: {"NPU_compute_time": {"min", "max", "mean", "median", "percentile(99%)", "count"},
"H2D_latency": {...}, "D2H_latency": {...}, "throughput": ..., "filesinfo": ..., ...}.
Both are parsed and must agree: they are the same numbers, so a disagreement means the text
and the file come from different runs.

Pure functions: nothing here runs the tool or touches a file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PcbError
from ..perf import LatencyStats

MODULE = "ais_bench"
OUTFMT = "BIN"
# The timestamped folder ais_bench creates under --output (time.strftime("%Y_%m_%d-%H_%M_%S")).
TIMESTAMP_FOLDER = re.compile(r"^\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}$")
SUMMARY_SUFFIX = "_summary.json"
# How far the printed and the JSON figures may differ (relative) before they count as two runs.
CROSS_CHECK_TOLERANCE = 0.01

_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_STATS = r"{name} \(ms\): min = {n}, max = {n}, mean = {n}, median = {n}, percentile\(99%\) = {n}"
_BLOCKS = {
    "npu_compute": "NPU_compute_time",
    "h2d": "H2D_latency",
    "d2h": "D2H_latency",
}
_THROUGHPUT = re.compile(
    rf"throughput 1000\*batchsize(?:\.mean)?\({_NUMBER}\)/NPU_compute_time\.mean\({_NUMBER}\):"
    rf"\s*{_NUMBER}"
)
_SUMMARY_HEADER = re.compile(r"-+\s*Performance Summary\s*-+")


def ais_bench_command(
    model: str,
    *,
    input_dir: str | None = None,
    output: str | None = None,
    outfmt: str = OUTFMT,
    batch_size: int | None = None,
    device: int = 0,
    loop: int | None = None,
    warmup: int | None = None,
    dym_batch: int | None = None,
    display_all_summary: bool = False,
    python: str = "python3",
) -> list[str]:
    """`python3 -m ais_bench --model ... [--input DIR] [--output DIR --outfmt BIN] ...`.

    Without `input_dir` it is a pure inference (zeros), the way to time a model. `batch_size`
    only feeds ais_bench's throughput formula, so it must be the model's; `dym_batch` picks
    the gear of a dynamic-batch model."""
    if outfmt not in ("BIN", "NPY", "TXT"):
        raise PcbError(f"ais_bench --outfmt {outfmt!r}: BIN, NPY or TXT")
    command = [python, "-m", MODULE, "--model", model]
    if input_dir is not None:
        command += ["--input", input_dir]
    if output is not None:
        command += ["--output", output, "--outfmt", outfmt]
    if batch_size is not None:
        command += ["--batchsize", str(batch_size)]
    command += ["--device", str(device)]
    if loop is not None:
        command += ["--loop", str(loop)]
    if warmup is not None:
        command += ["--warmup_count", str(warmup)]
    if dym_batch is not None:
        command += ["--dymBatch", str(dym_batch)]
    if display_all_summary:
        command += ["--display_all_summary", "True"]
    return command


@dataclass(frozen=True)
class TimeStats:
    """One of ais_bench's timing blocks, in milliseconds."""

    min: float
    max: float
    mean: float
    median: float
    p99: float
    count: int | None = None

    def latency(self) -> LatencyStats:
        return LatencyStats(
            min_ms=self.min,
            mean_ms=self.mean,
            median_ms=self.median,
            p99_ms=self.p99,
            max_ms=self.max,
        )

    def to_dict(self) -> dict[str, Any]:
        """In ais_bench's own names, as its summary JSON has them."""
        payload: dict[str, Any] = {
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "median": self.median,
            "percentile(99%)": self.p99,
        }
        if self.count is not None:
            payload["count"] = self.count
        return payload


@dataclass(frozen=True)
class AisSummary:
    npu_compute: TimeStats
    throughput: float
    batch_size: float | None = None  # the batch its throughput formula used (printed only)
    h2d: TimeStats | None = None
    d2h: TimeStats | None = None

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "NPU_compute_time": self.npu_compute.to_dict(),
            "throughput": self.throughput,
        }
        if self.h2d is not None:
            payload["H2D_latency"] = self.h2d.to_dict()
        if self.d2h is not None:
            payload["D2H_latency"] = self.d2h.to_dict()
        return payload


def _float(text: str) -> float:
    return float(text)


def parse_printed_summary(text: str) -> AisSummary:
    """The last summary block ais_bench printed (the last run's, when a log holds several)."""
    headers = list(_SUMMARY_HEADER.finditer(text))
    block = text[headers[-1].end() :] if headers else text
    stats: dict[str, TimeStats] = {}
    for key, name in _BLOCKS.items():
        pattern = re.compile(_STATS.format(name=name, n=_NUMBER))
        found = pattern.findall(block)
        if found:
            values = [_float(v) for v in found[-1]]
            stats[key] = TimeStats(*values)
    throughput = _THROUGHPUT.findall(block)
    if "npu_compute" not in stats or not throughput:
        raise PcbError(
            "ais_bench printed no performance summary (no `NPU_compute_time (ms): ...` and "
            "`throughput ...` lines): it failed before the end of its run; see its output above"
        )
    batch, _mean, value = (_float(v) for v in throughput[-1])
    return AisSummary(
        npu_compute=stats["npu_compute"],
        throughput=value,
        batch_size=batch,
        h2d=stats.get("h2d"),
        d2h=stats.get("d2h"),
    )


def _json_stats(payload: Mapping[str, Any], name: str, where: str) -> TimeStats | None:
    block = payload.get(name)
    if block is None:
        return None
    try:
        return TimeStats(
            min=float(block["min"]),
            max=float(block["max"]),
            mean=float(block["mean"]),
            median=float(block["median"]),
            p99=float(block["percentile(99%)"]),
            count=int(block["count"]) if "count" in block else None,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise PcbError(
            f"{where}: {name} lacks min/max/mean/median/percentile(99%) ({error}): not an "
            "ais_bench summary, or a version this parser does not know"
        ) from None


def parse_summary_json(payload: Mapping[str, Any], where: str = "summary JSON") -> AisSummary:
    """The `<timestamp>_summary.json` ais_bench writes beside its outputs."""
    if not isinstance(payload, Mapping):
        raise PcbError(f"{where} is not a JSON object: not an ais_bench summary")
    npu = _json_stats(payload, "NPU_compute_time", where)
    if npu is None or "throughput" not in payload:
        raise PcbError(f"{where} has no NPU_compute_time and throughput: not an ais_bench summary")
    return AisSummary(
        npu_compute=npu,
        throughput=float(payload["throughput"]),
        h2d=_json_stats(payload, "H2D_latency", where),
        d2h=_json_stats(payload, "D2H_latency", where),
    )


def _relative(a: float, b: float) -> float:
    if a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def cross_check(
    printed: AisSummary,
    from_json: AisSummary,
    batch_size: int,
    tolerance: float = CROSS_CHECK_TOLERANCE,
    where: str = "the summary JSON",
) -> float:
    """The throughput both summaries agree on; PcbError when they, or ais_bench's own formula
    (1000 x batch / mean NPU compute ms), disagree by more than `tolerance`."""
    if printed.throughput <= 0 or from_json.throughput <= 0:
        raise PcbError(
            f"ais_bench reports a throughput of {printed.throughput} (printed) / "
            f"{from_json.throughput} ({where}): no inference was timed; check --batchsize and "
            "that the model ran"
        )
    checks = [
        ("printed throughput", printed.throughput, "JSON throughput", from_json.throughput),
        (
            "printed mean NPU compute time",
            printed.npu_compute.mean,
            "JSON mean",
            from_json.npu_compute.mean,
        ),
        (
            "JSON throughput",
            from_json.throughput,
            f"1000 x {batch_size} / JSON mean",
            1000.0 * batch_size / from_json.npu_compute.mean,
        ),
    ]
    for name_a, a, name_b, b in checks:
        difference = _relative(a, b)
        if difference > tolerance:
            raise PcbError(
                f"ais_bench's summaries disagree: {name_a} {a:g} vs {name_b} {b:g} "
                f"({difference:.1%} apart, more than {tolerance:.0%}); the printed text and "
                f"{where} are not of the same run, or --batchsize is not the model's batch "
                f"({batch_size}): re-run the stage into an empty folder"
            )
    return from_json.throughput


def natural_sort(names: Sequence[str]) -> list[str]:
    """ais_bench's order of the files of an input folder (its utils.natural_sort)."""

    def key(text: str) -> list[Any]:
        return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]

    return sorted(sorted(names), key=key)


def output_name(input_file: str, index: int = 0, outfmt: str = OUTFMT) -> str:
    """The file ais_bench writes for output `index` of an input file: `<name up to the first
    dot>_<index>.<fmt>`."""
    return f"{input_file.split('.')[0]}_{index}.{outfmt.lower()}"


def version_text(python: str = "python3") -> str:
    """The version of the ais_bench that `python -m ais_bench` runs ("unknown" when that
    interpreter has no metadata of it): asked of that interpreter, in the tool's environment."""
    import subprocess

    code = (
        "from importlib import metadata\n"
        "for name in ('ais_bench', 'ais-bench'):\n"
        "    try:\n"
        "        print(metadata.version(name)); break\n"
        "    except metadata.PackageNotFoundError:\n"
        "        pass\n"
    )
    try:
        result = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else "unknown"
