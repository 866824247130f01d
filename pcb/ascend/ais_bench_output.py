"""What ais_bench (and ais_infer before it, and msit benchmark, which runs the same code) says
about a run: its printed summaries, its summary JSON, the sum of a multi-device run, and where
it leaves them. Pure functions; tested on real output in tests/fixtures/real/ais_bench.

The printed summary block, by version (source: the tool's summary.py in Ascend/tools and its
history):

    [INFO] -----------------Performance Summary------------------
    [INFO] H2D_latency (ms): min = .., max = .., mean = .., median = .., percentile(99%) = ..
    [INFO] NPU_compute_time (ms): min = .., max = .., mean = .., median = .., percentile(99%) = ..
    [INFO] D2H_latency (ms): ...
    [INFO] throughput (1000*batchsize/NPU_compute_time): 171.56            ais_infer 2022-06/07
    [INFO] throughput 1000*batchsize(16)/NPU_compute_time.mean(10.6): 1503.6    2022-07 .. 2023-01
    [INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(2.45): 407.1  2023-01 on

H2D/D2H only with --display_all_summary (always, before it existed). With --pipeline and
several threads (2024 on) the lines hold the mean only: `NPU_compute_time (ms): mean = ..`.
A multi-device run (--device 0,1; 2022-12 on) prints one block per device, interleaved, then

    i:0 device_1 throughput:281.38 start_time:... end_time:...
    [INFO] summary throughput:557.93

The summary JSON: `<output>/<timestamp>/sumary.json` (inside the output folder; ais_infer
until 2022-11), then `<output>/<timestamp>_summary.json` beside it; a multi-device run
writes `<output>/<timestamp>/device<N>[_<i>]_summary.json` beside each device's folder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..perf import LatencyStats

# The timestamped folder ais_bench creates under --output (time.strftime("%Y_%m_%d-%H_%M_%S")).
TIMESTAMP_FOLDER = re.compile(r"^\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}$")
SUMMARY_SUFFIX = "_summary.json"
OLD_SUMMARY_NAME = "sumary.json"  # sic: ais_infer's name, inside the output folder
DEVICE_FOLDER = re.compile(r"^device(?P<device>\d+)(?:_(?P<index>\d+))?$")
# How far two statements of one figure may differ (relative) before they count as two runs.
CROSS_CHECK_TOLERANCE = 0.01

_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_STATS = (
    r"{name} \(ms\): min = {n}, max = {n}, mean = {n}, median = {n}, "
    r"percentile\(\d+%\) = {n}"
)
_MEAN_ONLY = r"{name} \(ms\): mean = {n}\s*$"
_BLOCKS = {"npu_compute": "NPU_compute_time", "h2d": "H2D_latency", "d2h": "D2H_latency"}
# The three wordings of the throughput line; the batch and mean in it where it has them.
_THROUGHPUT = re.compile(
    rf"throughput (?:\(1000\*batchsize/NPU_compute_time\)|1000\*batchsize(?:\.mean)?\({_NUMBER}\)"
    rf"/NPU_compute_time\.mean\({_NUMBER}\)):\s*{_NUMBER}",
    re.IGNORECASE,
)
_SUMMARY_HEADER = re.compile(r"-+\s*Performance Summary\s*-+")
_DEVICE_LINE = re.compile(rf"i:(\d+)\s+device_(\d+)\s+throughput:\s*{_NUMBER}")
_SUMMED = re.compile(rf"summary throughput:\s*{_NUMBER}")
_PERCENTILE_KEY = re.compile(r"^(?:percentile\(\d+%\)|P\d+)$")


@dataclass(frozen=True)
class TimeStats:
    """One of ais_bench's timing blocks, in milliseconds. A --pipeline run gives the mean only
    (the others are None)."""

    mean: float
    min: float | None = None
    max: float | None = None
    median: float | None = None
    p99: float | None = None
    count: int | None = None

    @property
    def mean_only(self) -> bool:
        return self.min is None

    def latency(self) -> LatencyStats:
        """As a perf record's latency; a mean-only block stands in the mean for the rest."""

        def value(field: float | None) -> float:
            return self.mean if field is None else field

        return LatencyStats(
            min_ms=value(self.min),
            mean_ms=self.mean,
            median_ms=value(self.median),
            p99_ms=value(self.p99),
            max_ms=value(self.max),
        )

    def to_dict(self) -> dict[str, Any]:
        """In ais_bench's own names, as its summary JSON has them."""
        payload: dict[str, Any] = {}
        if not self.mean_only:
            payload.update(min=self.min, max=self.max)
        payload["mean"] = self.mean
        if not self.mean_only:
            payload.update({"median": self.median, "percentile(99%)": self.p99})
        if self.count is not None:
            payload["count"] = self.count
        return payload


@dataclass(frozen=True)
class AisSummary:
    npu_compute: TimeStats
    throughput: float
    batch_size: float | None = None  # the batch its printed formula used, where it says
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


@dataclass(frozen=True)
class MultiDeviceSummary:
    """What a multi-device run printed last: each device's throughput (by the device id it was
    given) and their sum."""

    per_device: dict[int, float]
    total: float
    total_printed: bool  # False: the sum line was missing (cut log), the total is our sum


def _stats_in(block: str, name: str) -> TimeStats | None:
    full = re.findall(_STATS.format(name=name, n=_NUMBER), block)
    if full:
        low, high, mean, median, p99 = (float(v) for v in full[-1])
        return TimeStats(mean=mean, min=low, max=high, median=median, p99=p99)
    mean_only = re.findall(_MEAN_ONLY.format(name=name, n=_NUMBER), block, flags=re.MULTILINE)
    if mean_only:
        return TimeStats(mean=float(mean_only[-1]))
    return None


def _summary_of(block: str) -> AisSummary | None:
    npu = _stats_in(block, _BLOCKS["npu_compute"])
    throughput = _THROUGHPUT.findall(block)
    if npu is None or not throughput:
        return None
    batch, _mean, value = throughput[-1]
    return AisSummary(
        npu_compute=npu,
        throughput=float(value),
        batch_size=float(batch) if batch else None,
        h2d=_stats_in(block, _BLOCKS["h2d"]),
        d2h=_stats_in(block, _BLOCKS["d2h"]),
    )


def parse_printed_summaries(text: str) -> list[AisSummary]:
    """Every summary block in the text, in order (one per run, or per device of a
    multi-device run, whose blocks interleave and so name no device)."""
    text = text.replace("\r\n", "\n")
    starts = [m.start() for m in _SUMMARY_HEADER.finditer(text)] or [0]
    ends = starts[1:] + [len(text)]
    found = [_summary_of(text[a:b]) for a, b in zip(starts, ends)]
    return [summary for summary in found if summary is not None]


def parse_printed_summary(text: str) -> AisSummary:
    """The summary block of a one-device run (the last, when a log holds several runs).

    A multi-device log is refused: its last block is one device's, not the sum; read it with
    parse_multi_device."""
    if _SUMMED.search(text) or _DEVICE_LINE.search(text):
        raise PcbError(
            "this ais_bench output is of a multi-device run (`summary throughput:` / "
            "`i:N device_D throughput:` lines): its last block is one device's figure; read "
            "the devices and their sum with parse_multi_device"
        )
    summaries = parse_printed_summaries(text)
    if not summaries:
        raise PcbError(
            "ais_bench printed no performance summary (no `NPU_compute_time (ms): ...` and "
            "`throughput ...` lines): it failed before the end of its run; see its output above"
        )
    return summaries[-1]


def parse_multi_device(text: str) -> MultiDeviceSummary | None:
    """The per-device lines and the summed throughput of a multi-device run; None when the
    text has no per-device line. The sum line must agree with the per-device lines."""
    per_device = {int(d): float(v) for _i, d, v in _DEVICE_LINE.findall(text)}
    if not per_device:
        return None
    summed = sum(per_device.values())
    printed = _SUMMED.findall(text)
    if not printed:
        return MultiDeviceSummary(per_device, summed, total_printed=False)
    total = float(printed[-1])
    if _relative(total, summed) > CROSS_CHECK_TOLERANCE:
        raise PcbError(
            f"ais_bench's summary throughput {total:g} is not the sum of its devices' "
            f"({summed:g}: {per_device}): a device's line is missing from the log"
        )
    return MultiDeviceSummary(per_device, total, total_printed=True)


def _json_stats(payload: Mapping[str, Any], name: str, where: str) -> TimeStats | None:
    block = payload.get(name)
    if block is None:
        return None
    if not isinstance(block, Mapping) or "mean" not in block:
        raise PcbError(
            f"{where}: {name} has no mean: not an ais_bench summary, or a version this parser "
            "does not know"
        )
    percentile = [key for key in block if _PERCENTILE_KEY.match(str(key))]
    try:
        if "min" not in block:  # --pipeline: the mean (and count) only
            return TimeStats(mean=float(block["mean"]), count=_count(block))
        return TimeStats(
            mean=float(block["mean"]),
            min=float(block["min"]),
            max=float(block["max"]),
            median=float(block["median"]),
            p99=float(block[percentile[0]]),
            count=_count(block),
        )
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise PcbError(
            f"{where}: {name} lacks min/max/mean/median/percentile ({error!r}): not an "
            "ais_bench summary, or a version this parser does not know"
        ) from None


def _count(block: Mapping[str, Any]) -> int | None:
    return int(block["count"]) if "count" in block else None


def parse_summary_json(payload: Mapping[str, Any], where: str = "summary JSON") -> AisSummary:
    """The summary JSON of any version (see the module's docstring)."""
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


@dataclass(frozen=True)
class RunFiles:
    """Where one run (or one device of a multi-device run) left its outputs and summary."""

    folder: Path
    summary: Path | None  # None: the run wrote no summary JSON (its printed one is all there is)
    device: int | None = None  # the device id it was given, for a multi-device run


def _only_folder(scratch: Path) -> Path:
    folders = sorted(p for p in scratch.iterdir() if p.is_dir())
    if len(folders) != 1:
        names = ", ".join(p.name for p in folders) or "none"
        raise PcbError(
            f"expected one output folder from ais_bench in {scratch}, found {names}: was "
            "another ais_bench writing there?"
        )
    return folders[0]


def find_run_files(scratch: Path) -> RunFiles:
    """The folder a one-device run created under its --output (empty before) and its summary
    JSON: `<ts>_summary.json` beside it, or ais_infer's `sumary.json` inside it; None when
    there is neither (the printed summary is then all there is)."""
    folder = _only_folder(scratch)
    for summary in (scratch / f"{folder.name}{SUMMARY_SUFFIX}", folder / OLD_SUMMARY_NAME):
        if summary.is_file():
            return RunFiles(folder, summary)
    return RunFiles(folder, None)


def find_device_run_files(scratch: Path) -> dict[int, RunFiles]:
    """Each device's folder and summary JSON of a multi-device run, by the device id it was
    given: `<ts>/device<N>[_<i>]/` and `<ts>/device<N>[_<i>]_summary.json`."""
    top = _only_folder(scratch)
    runs: dict[int, RunFiles] = {}
    for folder in sorted(p for p in top.iterdir() if p.is_dir()):
        found = DEVICE_FOLDER.match(folder.name)
        summary = top / f"{folder.name}{SUMMARY_SUFFIX}"
        if found and summary.is_file():
            device = int(found.group("device"))
            runs[device] = RunFiles(folder, summary, device)
    if not runs:
        raise PcbError(
            f"ais_bench's multi-device run left no device<N>/ folder with its "
            f"device<N>{SUMMARY_SUFFIX} in {top}: did a device fail? See its output"
        )
    return runs
