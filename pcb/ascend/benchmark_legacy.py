"""The old Ascend `benchmark` tool the guide ran (benchmark.x86_64 / .aarch64): its perf file and
its dump names. Pure parsing; import_results.py brings a folder of its results into a run.

`result/perf_vision_batchsize_<bs>_device_<d>.txt` (the guide renames it with a query_ /
gallery_ prefix, and once wrote it `.txt.txt`) holds

    -----------------Performance Summary------------------
    [e2e] throughputRate: 104.078, latency: 32360.4
    [data read] throughputRate: 441.807, moduleLatency: 2.26343
    [preprocess] throughputRate: 431.498, moduleLatency: 2.31751
    [infer] throughputRate: 106.343, Interface throughputRate: 137.422 moduleLatency: 8.68511
    [post] throughputRate: 106.341, moduleLatency: 9.40375

Later builds of the tool (ModelZoo READMEs of 2022 show them on the 310 and the 310P) name the
modules `[inference]` and `[postprocess]` and put a comma before moduleLatency:

    [inference] throughputRate: 347.876, Interface throughputRate: 838.101, moduleLatency: 2.3685

The guide's figure is the infer module's Interface throughputRate, one chip's; the card figure
of a 310 is that times 4 (four chips per card): 137.422 x 4 = 549.688. Dumps are
`result/dumpOutput_device<d>/<stem>_<k>.bin`, outputs numbered from 1.

A pure inference (`-round=N` without input) writes `result/PureInfer_perf_of_<om name>_in_device_
<d>.txt` holding `ave_throughputRate = 974.27samples/s, ave_latency = 1.02917ms`, and prints the
same as `[INFO] ave_throughputRate: 240.622samples/s, ave_latency: 4.24716ms`; the rate is one
chip's, as the Interface throughputRate is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PcbError

PERF_FILE = re.compile(
    r"^(?:(?P<prefix>.*?)_)?perf_vision_batchsize_(?P<batch>\d+)_device_(?P<device>\d+)(?:\.txt)+$"
)
PURE_INFER_FILE = re.compile(
    r"^PureInfer_perf_of_(?P<model>.+)_in_device_(?P<device>\d+)(?:\.txt)+$"
)
DUMP_FOLDER = re.compile(r"^dumpOutput_device(?P<device>\d+)(?:_(?P<split>query|gallery))?$")
# The infer module by the tool's build: [infer] (the guide's), [inference] (later builds).
INFER_MODULES = ("infer", "inference")
_NUMBER = r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
_LINE = re.compile(r"^\s*\[(?P<module>[^\]]+)\]\s*(?P<rest>.*)$")
_FIELD = re.compile(rf"(?P<name>[A-Za-z][A-Za-z ]*?):\s*{_NUMBER}")
_PURE = re.compile(
    rf"ave_throughputRate\s*[=:]\s*{_NUMBER}\s*samples/s,\s*ave_latency\s*[=:]\s*{_NUMBER}\s*ms"
)
_BATCH_IN_NAME = re.compile(r"_bs(\d+)(?:_|$)")


@dataclass(frozen=True)
class PerfFileName:
    batch_size: int
    device: int
    prefix: str  # "query", "gallery", or "" for the tool's own name


def parse_perf_file_name(name: str) -> PerfFileName | None:
    found = PERF_FILE.match(name)
    if not found:
        return None
    return PerfFileName(
        int(found.group("batch")), int(found.group("device")), found.group("prefix") or ""
    )


@dataclass(frozen=True)
class LegacyPerf:
    """The figures of one perf file. Rates are images/s; latencies in ms."""

    interface_rate: float  # [infer] Interface throughputRate: the NPU's own rate, one chip
    infer_rate: float  # [infer] throughputRate: including the tool's queueing
    e2e_rate: float | None  # [e2e] throughputRate: the whole pipeline
    e2e_latency_ms: float | None
    infer_module_latency_ms: float | None
    modules: dict  # every [module] line: {field: value}

    def card_rate(self, chips_per_card: int) -> float:
        """The guide's per-card figure: the chip's Interface throughputRate x chips per card."""
        if chips_per_card <= 0:
            raise PcbError(f"chips per card must be positive, got {chips_per_card}")
        return self.interface_rate * chips_per_card


def parse_benchmark_perf(text: str, where: str = "perf file") -> LegacyPerf:
    modules: dict = {}
    for line in text.splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        fields = {m.group("name").strip(): float(m.group(2)) for m in _FIELD.finditer(line)}
        if fields:
            modules[found.group("module").strip()] = fields
    infer = next((modules[m] for m in INFER_MODULES if m in modules), {})
    if "Interface throughputRate" not in infer:
        raise PcbError(
            f"{where} has no `[infer]` / `[inference] ... Interface throughputRate: N` line: not "
            "a perf file of the benchmark tool, or the run did not finish (its Performance "
            "Summary is missing)"
        )
    e2e = modules.get("e2e", {})
    return LegacyPerf(
        interface_rate=infer["Interface throughputRate"],
        infer_rate=infer.get("throughputRate", infer["Interface throughputRate"]),
        e2e_rate=e2e.get("throughputRate"),
        e2e_latency_ms=e2e.get("latency"),
        infer_module_latency_ms=infer.get("moduleLatency"),
        modules=modules,
    )


@dataclass(frozen=True)
class PureInferFileName:
    model: str  # the .om's name without .om, e.g. onnx_alexnet_bs4
    device: int

    @property
    def batch_size(self) -> int | None:
        """The batch size when the model's name says it (`..._bs16...`), as the guide's do."""
        found = _BATCH_IN_NAME.findall(self.model)
        return int(found[-1]) if found else None


def parse_pure_infer_file_name(name: str) -> PureInferFileName | None:
    found = PURE_INFER_FILE.match(name)
    if not found:
        return None
    return PureInferFileName(found.group("model"), int(found.group("device")))


@dataclass(frozen=True)
class PureInferPerf:
    """One chip's pure-inference rate (images/s) and the per-image latency the tool prints."""

    rate: float
    latency_ms: float


def parse_pure_infer(text: str, where: str = "PureInfer file") -> PureInferPerf:
    """The file's `ave_throughputRate = ...` line, or the printed `ave_throughputRate: ...`."""
    found = _PURE.findall(text)
    if not found:
        raise PcbError(
            f"{where} has no `ave_throughputRate = N samples/s, ave_latency = N ms` line: not a "
            "PureInfer result of the benchmark tool"
        )
    rate, latency = found[-1]
    return PureInferPerf(float(rate), float(latency))
