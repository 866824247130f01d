"""MLPerf LoadGen's logs read into records: mlperf_log_summary.txt and mlperf_log_detail.txt.

The summary is the text every MLPerf submitter knows (`MLPerf Results Summary`, `Result is :
VALID`, `Additional Stats`, `Test Parameters Used`); it is parsed by its labels, which have
changed over LoadGen versions (`90th percentile latency (ns)` in v3.1's submissions,
`90.0th percentile latency (ns)` in LoadGen 6.0; `Single Stream` in old ones). The detail log
holds the same results as `:::MLLOG {json}` lines, with keys such as `result_validity` and
`loadgen_version`. Real summaries from MLCommons' published results are kept as test fixtures
(tests/fixtures/real/loadgen).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PcbError

SUMMARY_NAME = "mlperf_log_summary.txt"
DETAIL_NAME = "mlperf_log_detail.txt"
_MLLOG = ":::MLLOG"

# "50.00 percentile latency (ns)   : 1104252"
_PERCENTILE = re.compile(r"^(\d+(?:\.\d+)?) percentile latency \(ns\)$")
# "90th percentile latency (ns)" (v3.1) or "90.0th percentile latency (ns)" (LoadGen 6.0)
_TARGET_PERCENTILE = re.compile(r"^(\d+(?:\.\d+)?)th percentile latency \(ns\)$")
_CHECKS = {
    "min duration satisfied": "min_duration",
    "min queries satisfied": "min_queries",
    "early stopping satisfied": "early_stopping",
}

# The summary's numeric lines (lower-cased key -> field).
_NUMBERS = {
    "samples per second": "samples_per_second",
    "qps w/ loadgen overhead": "qps_with_overhead",
    "qps w/o loadgen overhead": "qps_without_overhead",
    "min latency (ns)": "min_latency_ns",
    "max latency (ns)": "max_latency_ns",
    "mean latency (ns)": "mean_latency_ns",
}


@dataclass(frozen=True)
class LoadGenSummary:
    """What mlperf_log_summary.txt says; latencies in nanoseconds, as LoadGen prints them."""

    sut_name: str
    scenario: str  # "SingleStream", "MultiStream", "Server" or "Offline"
    mode: str
    valid: bool
    checks: dict[str, bool]  # min_duration, min_queries, early_stopping: satisfied or not
    samples_per_second: float | None = None  # Offline's result
    target_latency_percentile: float | None = None  # SingleStream's result: which percentile
    target_latency_ns: float | None = None  # ... and its value
    qps_with_overhead: float | None = None
    qps_without_overhead: float | None = None
    min_latency_ns: float | None = None
    max_latency_ns: float | None = None
    mean_latency_ns: float | None = None
    percentiles_ns: dict[str, float] = field(default_factory=dict)  # "50.00" -> ns
    parameters: dict[str, str] = field(default_factory=dict)
    early_stopping: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    warnings: bool | None = None  # None: the summary did not say
    errors: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def percentile_ms(self, percentile: float) -> float | None:
        """A latency percentile in milliseconds (50, 90, 99, ...), None if not reported."""
        for key, value in self.percentiles_ns.items():
            if abs(float(key) - percentile) < 1e-9:
                return value / 1e6
        return None

    def failed_checks(self) -> list[str]:
        return [name for name, satisfied in self.checks.items() if not satisfied]


def _number(text: str, where: str) -> float:
    try:
        return float(text.strip().split()[0])
    except (ValueError, IndexError):
        raise PcbError(f"{where}: expected a number, got {text.strip()!r}") from None


def _scenario(text: str) -> str:
    # "Single Stream" in old LoadGens; the TestScenario names have no spaces.
    return text.replace(" ", "")


def parse_summary(text: str, source: str = "mlperf_log_summary.txt") -> LoadGenSummary:
    """Parse LoadGen's summary; a text that is not one raises PcbError naming `source`."""
    if "MLPerf Results Summary" not in text:
        raise PcbError(
            f"{source} is not a LoadGen summary (no 'MLPerf Results Summary' header): "
            "point at the mlperf_log_summary.txt LoadGen wrote"
        )
    fields: dict[str, Any] = {
        "checks": {},
        "percentiles_ns": {},
        "parameters": {},
        "early_stopping": [],
        "recommendations": [],
    }
    section = "results"
    bullets: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or set(line) == {"="}:
            continue
        if line in ("MLPerf Results Summary",):
            section = "results"
            continue
        if line == "Additional Stats":
            section, bullets = "stats", None
            continue
        if line == "Test Parameters Used":
            section, bullets = "parameters", None
            continue
        if line.startswith("Early Stopping Result"):
            bullets = fields["early_stopping"]
            continue
        if line.startswith("Recommendations"):
            bullets = fields["recommendations"]
            continue
        if line.startswith("*") and bullets is not None:
            bullets.append(line.lstrip("* ").strip())
            continue
        if bullets is not None and not line.startswith("*") and ":" not in line and bullets:
            bullets[-1] += " " + line  # a bullet wrapped onto the next line
            continue
        lowered = line.lower()
        if lowered.startswith("no warnings encountered"):
            fields["warnings"] = False
            continue
        if lowered.startswith("no errors encountered"):
            fields["errors"] = False
            continue
        if "warnings encountered" in lowered:
            fields["warnings"] = True
            continue
        if "errors encountered" in lowered:
            fields["errors"] = True
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        where = f"{source}: {key}"
        if section == "parameters":
            fields["parameters"][key] = value
            continue
        name = key.lower()
        if name == "sut name":
            fields["sut_name"] = value
        elif name == "scenario":
            fields["scenario"] = _scenario(value)
        elif name == "mode":
            fields["mode"] = value
        elif name == "result is":
            fields["valid"] = value.upper() == "VALID"
        elif name in _CHECKS:
            fields["checks"][_CHECKS[name]] = value.lower().startswith("yes")
        elif name in _NUMBERS:
            fields[_NUMBERS[name]] = _number(value, where)
        elif match := _PERCENTILE.match(key):
            fields["percentiles_ns"][match.group(1)] = _number(value, where)
        elif (match := _TARGET_PERCENTILE.match(key)) and section == "results":
            fields["target_latency_percentile"] = float(match.group(1))
            fields["target_latency_ns"] = _number(value, where)
    missing = [k for k in ("sut_name", "scenario", "mode", "valid") if k not in fields]
    if missing:
        raise PcbError(
            f"{source} lacks {', '.join(missing)}: the summary is cut short or not LoadGen's; "
            "run the measurement again"
        )
    return LoadGenSummary(**fields)


def read_summary(path: Path) -> LoadGenSummary:
    path = Path(path)
    if not path.is_file():
        raise PcbError(f"LoadGen summary not found: {path}; LoadGen writes it when a test ends")
    return parse_summary(path.read_text(encoding="utf-8", errors="replace"), str(path))


def parse_detail(text: str) -> dict[str, Any]:
    """The `:::MLLOG {json}` lines of the detail log as key -> value (the last one wins)."""
    values: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.startswith(_MLLOG):
            continue
        try:
            entry = json.loads(line[len(_MLLOG) :])
        except ValueError:
            continue  # a line cut short by a killed run: the others still count
        if isinstance(entry, dict) and "key" in entry:
            values[str(entry["key"])] = entry.get("value")
    return values


def loadgen_version(detail: dict[str, Any]) -> str:
    """'6.0.17' from the detail log's `loadgen_version` ('6.0.17 @ d6147c7eb7')."""
    value = str(detail.get("loadgen_version") or "")
    return value.split("@")[0].strip()
