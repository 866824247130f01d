"""trtexec's printed results -> numbers: GPU compute latency, throughput, version, device.

Two formats exist (facts.md section 5, and real logs in tests/fixtures/real/trtexec):

- TensorRT 7 (the guide's 7.3): a block of lines after `GPU Compute`:
  `min: 37.9453 ms`, `max: ...`, `mean: ...`, `median: ...`, `percentile: 46.219 ms at 99%`,
  `total compute time: 3.822 s`; the throughput sits in the `Host Latency` block as
  `throughput: N qps`.
- TensorRT 8 and later: one line per metric under `=== Performance summary ===`, e.g.
  `GPU Compute Time: min = a ms, max = b ms, mean = c ms, median = d ms, percentile(90%) = ...,
  percentile(95%) = ..., percentile(99%) = e ms` (8.0-8.4 print percentile(99%) only), and
  `Throughput: N qps`.

Real logs also hold what a naive reader trips over: `--verbose` ends with an explanation of
every metric whose lines start like the metrics themselves (`[V] GPU Compute Time: the GPU
latency ...`), TensorRT 8.0 writes its version as `TensorRT version: 8003`, pasted logs pad
lines with spaces or drop the `=` signs, and Windows builds end lines with CRLF. Only lines
that carry numbers and are not verbose (`[V]`) count. Pure functions of the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import PcbError
from ..perf import LatencyStats, images_per_second
from .versions import TensorRTVersion, decode_packed

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
_PREFIX = re.compile(r"^\s*(?:\[\d{2}/\d{2}/\d{4}-\d{2}:\d{2}:\d{2}\]\s*)?\[([A-Z])\]\s?")
# 8.0+: `[TensorRT v8601]`; 10.7+ add ` [b<build>]` after it.
_RUNNING = re.compile(r"&&&&\s+RUNNING\s+TensorRT\.trtexec\s+\[TensorRT\s+v(\d+)\]")
_RUNNING_UNVERSIONED = re.compile(r"&&&&\s+RUNNING\s+TensorRT\.trtexec\s+#")
_VERSION_LINE = re.compile(r"^TensorRT version:\s*(\d+(?:\.\d+)*)\s*$")
_DEVICE_LINE = re.compile(r"^Selected Device:\s*(.+?)\s*$")
_FAILED = re.compile(r"&&&&\s+FAILED\s+TensorRT\.trtexec")
# TensorRT 8+: `GPU Compute Time: min = 1.2 ms, ..., percentile(99%) = 1.5 ms`; the `=` is
# optional because hand-copied logs in the wild drop it.
_SUMMARY_METRIC = re.compile(
    rf"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=?\s*({NUMBER})\s*ms", re.IGNORECASE
)
_THROUGHPUT = re.compile(rf"^Throughput:\s*({NUMBER})\s*qps", re.IGNORECASE)
_TOTAL_GPU = re.compile(rf"^Total GPU Compute Time:\s*({NUMBER})\s*s\b")
_TOTAL_WALL = re.compile(rf"^Total Host Walltime:\s*({NUMBER})\s*s\b")
_TRACE = re.compile(rf"^Timing trace has\s+(\d+)\s+queries over\s+({NUMBER})\s*s")
# TensorRT 7's block lines.
_T7_LINE = re.compile(rf"^(min|max|mean|median):\s*({NUMBER})\s*ms\b")
_T7_PERCENTILE = re.compile(rf"^percentile:\s*({NUMBER})\s*ms at\s*(\d+(?:\.\d+)?)%")
_T7_TOTAL = re.compile(rf"^total compute time:\s*({NUMBER})\s*s\b")
_T7_THROUGHPUT = re.compile(rf"^throughput:\s*({NUMBER})\s*qps")
# 10.x with the profiler attached to the timed run (--dumpProfile/--exportProfile without
# --separateProfileRun) prints no summary but this (the 10.16.1 cookbook fixture).
_NO_E2E = "The e2e network timing is not reported"

FORMAT_TRT7 = "tensorrt7"
FORMAT_TRT8 = "tensorrt8+"
DEFAULT_TOLERANCE = 0.10
TAIL_LINES = 15
VERBOSE = "V"


@dataclass(frozen=True)
class Line:
    severity: str  # "I", "W", "E", "V", ... ; "" for a line without trtexec's prefix
    text: str  # without the prefix, surrounding whitespace and CR


def strip_prefix(line: str) -> str:
    """One line without its `[date-time] [I] ` prefix and surrounding whitespace (CR too)."""
    return _PREFIX.sub("", line.rstrip("\r\n")).strip()


def split_lines(text: str) -> list[Line]:
    lines = []
    for raw in text.splitlines():
        match = _PREFIX.match(raw)
        severity = match.group(1) if match else ""
        lines.append(Line(severity, strip_prefix(raw)))
    return lines


def clean_lines(text: str) -> list[str]:
    return [line.text for line in split_lines(text)]


def _reported(text: str) -> list[str]:
    """The lines that report results: not the verbose explanations (`[V] ...`)."""
    return [line.text for line in split_lines(text) if line.severity != VERBOSE]


def decode_version_number(number: int | str) -> str:
    """`[TensorRT v8601]` -> 8.6.1, `[TensorRT v100200]` -> 10.2.0 (versions.decode_packed)."""
    digits = str(number).strip()
    if not digits.isdigit():
        raise PcbError(f"TensorRT version number {number!r} is not an integer")
    return str(decode_packed(int(digits)))


def parse_tensorrt_version(text: str) -> TensorRTVersion | None:
    """The TensorRT version trtexec printed: the `TensorRT version:` line (8.0+, after the
    device information; 8.0 wrote it packed, `8003`), else the `&&&& RUNNING ...
    [TensorRT vN]` banner (8.0+, --help included); None where neither is there (TensorRT 7
    printed no version)."""
    found = None
    for line in clean_lines(text):
        match = _VERSION_LINE.match(line)
        if match:
            return TensorRTVersion.parse(match.group(1))
        running = _RUNNING.search(line)
        if running and found is None:
            found = decode_packed(int(running.group(1)))
    return found


def parse_version(text: str) -> str:
    """parse_tensorrt_version as text ("8.6.1"); "" where trtexec printed none."""
    version = parse_tensorrt_version(text)
    return "" if version is None else str(version)


def unversioned_banner(text: str) -> bool:
    """trtexec's banner without `[TensorRT vN]`: a TensorRT 7 (or older) trtexec."""
    return any(_RUNNING_UNVERSIONED.search(line) for line in clean_lines(text))


def parse_device(text: str) -> str:
    """`Selected Device: Tesla T4` -> "Tesla T4"; "" when absent."""
    for line in clean_lines(text):
        match = _DEVICE_LINE.match(line)
        if match:
            return match.group(1)
    return ""


def _number(text: str) -> float:
    return float(text)


@dataclass(frozen=True)
class TrtexecResult:
    """What one trtexec run measured: one query is one whole batch (explicit batch)."""

    format: str
    gpu_compute: LatencyStats
    percentiles: dict[str, float] = field(default_factory=dict)  # {"90": ms, "99": ms}
    qps: float | None = None  # None: not printed, or TensorRT 7's meaningless 0
    queries: int | None = None
    queries_estimated: bool = False  # TensorRT 7: total compute time / mean
    total_gpu_compute_s: float | None = None
    total_host_walltime_s: float | None = None
    tensorrt_version: str = ""
    device: str = ""
    p99_source: str = "percentile(99%)"

    def images_per_s(self, batch: int) -> float:
        """The guide's formula: 1000 x batch / mean GPU compute ms."""
        return images_per_second(batch, self.gpu_compute.mean_ms)

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "percentiles_ms": dict(self.percentiles),
            "qps": self.qps,
            "queries": self.queries,
            "queries_estimated": self.queries_estimated,
            "total_gpu_compute_s": self.total_gpu_compute_s,
            "total_host_walltime_s": self.total_host_walltime_s,
            "p99_source": self.p99_source,
        }


def _stats(values: dict[str, float], percentiles: dict[str, float], where: str) -> tuple:
    missing = [key for key in ("min", "max", "mean", "median") if key not in values]
    if missing:
        raise PcbError(
            f"trtexec's {where} lacks {', '.join(missing)}: the output is cut short or not "
            "trtexec's; re-run the stage and keep the whole log"
        )
    above = sorted((float(k), v) for k, v in percentiles.items() if float(k) >= 99)
    if above:
        # percentile(99%) normally; another --percentile: the nearest above 99, said so.
        p99, source = above[0][1], f"percentile({above[0][0]:g}%)"
    else:
        p99, source = values["max"], "max (no 99th percentile printed)"
    for key, value in [*values.items(), ("p99", p99)]:
        if not math.isfinite(value) or value < 0:
            raise PcbError(
                f"trtexec printed {key} = {value} ms in its {where}: no query was timed; "
                "re-run with a longer --duration"
            )
    stats = LatencyStats(
        min_ms=values["min"],
        mean_ms=values["mean"],
        median_ms=values["median"],
        p99_ms=p99,
        max_ms=values["max"],
    )
    return stats, source


def _summary_metrics(line: str) -> tuple[dict[str, float], dict[str, float]]:
    values: dict[str, float] = {}
    percentiles: dict[str, float] = {}
    for match in _SUMMARY_METRIC.finditer(line.split(":", 1)[1]):
        key, pct, number = match.group(1).lower(), match.group(2), _number(match.group(3))
        if pct is not None:
            percentiles[pct] = number
        else:
            values[key] = number
    return values, percentiles


def _parse_trt8(lines: list[str]) -> TrtexecResult | None:
    parsed = [_summary_metrics(line) for line in lines if line.startswith("GPU Compute Time:")]
    # Only lines with numbers: an explanation starting the same way is no summary.
    compute = [(values, percentiles) for values, percentiles in parsed if values or percentiles]
    if not compute:
        return None
    # The last one: a log holding several runs is judged by the run that ended it.
    values, percentiles = compute[-1]
    stats, source = _stats(values, percentiles, "`GPU Compute Time` line")
    qps = total_gpu = total_wall = None
    queries = None
    for text in lines:
        if (match := _THROUGHPUT.match(text)) is not None:
            qps = _number(match.group(1))
        elif (match := _TOTAL_GPU.match(text)) is not None:
            total_gpu = _number(match.group(1))
        elif (match := _TOTAL_WALL.match(text)) is not None:
            total_wall = _number(match.group(1))
        elif (match := _TRACE.match(text)) is not None:
            queries = int(match.group(1))
    return TrtexecResult(
        format=FORMAT_TRT8,
        gpu_compute=stats,
        percentiles=percentiles,
        qps=qps if qps and qps > 0 else None,
        queries=queries,
        total_gpu_compute_s=total_gpu,
        total_host_walltime_s=total_wall,
        p99_source=source,
    )


def _block(lines: list[str], title: str) -> Iterable[str]:
    """The lines after the last line reading exactly `title`, up to the next title line."""
    starts = [i for i, line in enumerate(lines) if line == title]
    if not starts:
        return []
    block = []
    for line in lines[starts[-1] + 1 :]:
        # Block lines are `key: value ...`; a bare title (or an empty line) ends the block.
        if ":" not in line:
            break
        block.append(line)
    return block


def _parse_trt7(lines: list[str]) -> TrtexecResult | None:
    block = list(_block(lines, "GPU Compute"))
    if not block:
        return None
    values: dict[str, float] = {}
    percentiles: dict[str, float] = {}
    total = None
    for line in block:
        if (match := _T7_LINE.match(line)) is not None:
            values[match.group(1)] = _number(match.group(2))
        elif (match := _T7_PERCENTILE.match(line)) is not None:
            percentiles[match.group(2)] = _number(match.group(1))
        elif (match := _T7_TOTAL.match(line)) is not None:
            total = _number(match.group(1))
    stats, source = _stats(values, percentiles, "`GPU Compute` block")
    qps = None
    for line in _block(lines, "Host Latency"):
        if (match := _T7_THROUGHPUT.match(line)) is not None:
            qps = _number(match.group(1))
    walltime = None
    for line in _block(lines, "Host Latency"):
        if line.startswith("walltime:"):
            found = re.match(rf"walltime:\s*({NUMBER})\s*s", line)
            walltime = _number(found.group(1)) if found else None
    queries = None
    if total is not None and stats.mean_ms > 0:
        # TensorRT 7 printed no query count: the total over the mean is within one query.
        queries = round(total * 1000.0 / stats.mean_ms)
    return TrtexecResult(
        format=FORMAT_TRT7,
        gpu_compute=stats,
        percentiles=percentiles,
        # TensorRT 7 multiplied by the implicit batch size, which is 0 for an explicit-batch
        # (ONNX) network: its `throughput: 0 qps` says nothing, so it is dropped.
        qps=qps if qps and qps > 0 else None,
        queries=queries,
        queries_estimated=queries is not None,
        total_gpu_compute_s=total,
        total_host_walltime_s=walltime,
        p99_source=source,
    )


def tail(text: str, count: int = TAIL_LINES) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def parse_trtexec_output(text: str) -> TrtexecResult:
    """Either format -> TrtexecResult; PcbError saying what is missing otherwise."""
    lines = _reported(text)
    if any(_FAILED.search(line) for line in lines):
        raise PcbError(
            "trtexec reported FAILED; its last lines:\n"
            + tail(text)
            + "\n"
            + (diagnose(text) or "Fix the cause above")
        )
    result = _parse_trt8(lines) or _parse_trt7(lines)
    if result is None:
        if any(_NO_E2E in line for line in lines):
            raise PcbError(
                "trtexec printed no performance summary: its profiler was attached to the timed "
                "run (--dumpProfile or --exportProfile without --separateProfileRun), and "
                "TensorRT 10 then reports no timing. Time without the profiler, or add "
                "--separateProfileRun. Its last lines:\n" + tail(text)
            )
        raise PcbError(
            "no GPU compute time in trtexec's output: expected TensorRT 8+'s "
            "`GPU Compute Time: min = ...` line or TensorRT 7's `GPU Compute` block. Did "
            "trtexec stop before timing (e.g. --skipInference)? Its last lines:\n" + tail(text)
        )
    return replace(result, tensorrt_version=parse_version(text), device=parse_device(text))


# ---- why a run failed ------------------------------------------------------------------------

_UNKNOWN_OPTION = re.compile(r"Unknown option:\s*(--[\w-]+)")
_NO_IMPORTER = re.compile(r"No importer registered for op:\s*(\S+)")
_DIAGNOSES = (
    (
        "Static model does not take explicit shapes",
        "the ONNX model has a fixed batch, and trtexec refuses --shapes/--minShapes for it: "
        "time the dynamic-batch model/pcb.onnx that `pcb export` writes (the --static-batch-"
        "sizes models are for atc), or export again",
    ),
    (
        "Plugin not found",
        "TensorRT's ONNX parser met an operator it has no importer or plugin for: export with "
        "opset 11 as `pcb export` does, and check the model with `python -m pcb export --help`",
    ),
    (
        "Failed to parse onnx file",
        "TensorRT's ONNX parser refused the model (the [E] lines above name the node): export "
        "it again with `pcb export` (opset 11), or try a newer TensorRT image",
    ),
    (
        "Serialization assertion failed",
        "the saved engine was built by another TensorRT or for another GPU: delete "
        "<run>/engines/tensorrt and run again (trt-perf --rebuild)",
    ),
)


def diagnose(text: str) -> str | None:
    """What a failed trtexec run needs, read from its error lines; None when not known."""
    lines = clean_lines(text)
    for line in lines:
        unknown = _UNKNOWN_OPTION.search(line)
        if unknown:
            version = parse_version(text) or "this version"
            return (
                f"trtexec of TensorRT {version} does not know {unknown.group(1)}: the flags "
                "follow trtexec's reported version (docs/tensorrt.md); a trtexec that reports "
                "no version, or another than it runs, gets the wrong ones"
            )
        importer = _NO_IMPORTER.search(line)
        if importer:
            return (
                f"TensorRT's ONNX parser has no importer for the operator {importer.group(1)}: "
                "export with opset 11 as `pcb export` does"
            )
    for needle, advice in _DIAGNOSES:
        if any(needle in line for line in lines):
            return advice
    return None


# ---- the cross-check -------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossCheck:
    """images/s from the mean GPU compute time against trtexec's own Throughput x batch."""

    status: str  # "ok", "warn", or "unavailable" (no usable qps printed)
    images_per_s: float
    qps_images_per_s: float | None
    relative_difference: float | None  # |qps x batch - images/s| / images/s
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "qps_images_per_s": self.qps_images_per_s,
            "relative_difference": self.relative_difference,
            "message": self.message,
        }


def cross_check(
    result: TrtexecResult, batch: int, tolerance: float = DEFAULT_TOLERANCE
) -> CrossCheck:
    """Compare the guide's figure (1000 x batch / mean GPU compute) with qps x batch.

    trtexec's Throughput divides the queries by the host walltime, and it enqueues one batch
    ahead, so on a GPU busy with this job only the two agree within a few percent. A lower
    qps means the GPU waited (host enqueue, input/output transfers, another process on the
    card); a higher one means queries overlapped (several streams or threads).
    """
    if tolerance < 0:
        raise PcbError(f"cross-check tolerance must be 0 or more, got {tolerance}")
    images = result.images_per_s(batch)
    if result.qps is None:
        return CrossCheck(
            "unavailable",
            images,
            None,
            None,
            "trtexec printed no usable Throughput (TensorRT 7 prints 0 qps for ONNX models): "
            "only the GPU compute figure is known",
        )
    measured = result.qps * batch
    difference = abs(measured - images) / images
    if difference <= tolerance:
        return CrossCheck(
            "ok", images, measured, difference, f"qps x batch agrees within {difference:.1%}"
        )
    if measured < images:
        why = (
            "the GPU sat idle part of the wall time: host-side enqueue or the input/output "
            "transfers (trtexec's Enqueue/H2D/D2H lines) kept it waiting, or another process "
            "shared the card. The images/s figure is the GPU's compute rate, as the guide "
            "reported it; make sure nothing else runs on the GPU (nvidia-smi), or try "
            "--useCudaGraph / --noDataTransfers to see the gap close"
        )
    else:
        why = (
            "queries overlapped (several streams or threads), so the mean compute time of one "
            "query overstates the time per batch; time with one stream to compare with the guide"
        )
    return CrossCheck(
        "warn",
        images,
        measured,
        difference,
        f"qps x batch = {measured:.2f} images/s differs from 1000 x batch / mean GPU compute "
        f"= {images:.2f} images/s by {difference:.1%} (tolerance {tolerance:.0%}): {why}",
    )
