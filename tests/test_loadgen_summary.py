"""LoadGen's summary and detail logs parsed: real published summaries and a run of our own.

The files under tests/fixtures/real/loadgen are verbatim copies of MLCommons submissions'
mlperf_log_summary.txt (and one quoted by a public project), with their sources and the
values read by hand in manifest.json. The test of our own run uses the installed LoadGen
(mlcommons-loadgen) with a SUT that sleeps, so the parser is checked on what this LoadGen
writes today, not on what it wrote in a past round.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.measure.loadgen_summary import (
    loadgen_version,
    parse_detail,
    parse_summary,
    read_summary,
)

REAL = Path(__file__).parent / "fixtures" / "real" / "loadgen"


def _manifest() -> list[dict]:
    return json.loads((REAL / "manifest.json").read_text(encoding="utf-8"))


def test_every_fixture_is_described() -> None:
    described = {entry["file"] for entry in _manifest()}
    present = {p.name for p in REAL.iterdir() if p.name != "manifest.json"}
    assert described == present
    for entry in _manifest():
        assert entry["source"]["repository"] and len(entry["source"]["commit"]) == 40


@pytest.mark.parametrize("entry", _manifest(), ids=lambda e: e["file"])
def test_real_summaries(entry: dict) -> None:
    summary = read_summary(REAL / entry["file"])
    expected = entry["expected"]
    assert summary.scenario == expected["scenario"]
    assert summary.valid is expected["valid"]
    assert summary.warnings == expected["warnings"]
    assert summary.errors == expected["errors"]
    if "samples_per_second" in expected:
        assert summary.samples_per_second == expected["samples_per_second"]
    if "checks" in expected:
        assert summary.checks == expected["checks"]
    if "target_latency_ns" in expected:
        assert summary.target_latency_percentile == expected["target_latency_percentile"]
        assert summary.target_latency_ns == expected["target_latency_ns"]
        assert summary.qps_without_overhead == expected["qps_without_overhead"]
    for percentile in ("50", "90", "99"):
        key = f"p{percentile}_ns"
        if key in expected:
            assert summary.percentile_ms(float(percentile)) == expected[key] / 1e6
    if "early_stopping_bullets" in expected:
        assert len(summary.early_stopping) == expected["early_stopping_bullets"]
    if "recommendations" in expected:
        assert len(summary.recommendations) == expected["recommendations"]
        assert summary.failed_checks() == ["min_duration"]
    if "min_duration_ms" in expected:
        assert summary.parameters["min_duration (ms)"] == expected["min_duration_ms"]
    if "min_query_count" in expected:
        assert summary.parameters["min_query_count"] == expected["min_query_count"]


def test_not_a_summary_is_refused_with_its_name() -> None:
    with pytest.raises(PcbError, match="notes.txt is not a LoadGen summary"):
        parse_summary("hello\n", "notes.txt")


def test_a_summary_cut_short_is_refused() -> None:
    text = (REAL / "v4.1_intel_emr_resnet50_offline_summary.txt").read_text(encoding="utf-8")
    with pytest.raises(PcbError, match="cut short"):
        parse_summary(text[:120], "cut.txt")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PcbError, match="not found"):
        read_summary(tmp_path / "mlperf_log_summary.txt")


def test_detail_lines_and_version() -> None:
    text = (
        ':::MLLOG {"key": "loadgen_version", "value": "6.0.17 @ d6147c7eb7", "time_ms": 0}\n'
        "some other line\n"
        ':::MLLOG {"key": "result_validity", "value": "VALID"}\n'
        ':::MLLOG {"key": "result_samp'  # cut short by a kill: skipped
    )
    detail = parse_detail(text)
    assert detail == {"loadgen_version": "6.0.17 @ d6147c7eb7", "result_validity": "VALID"}
    assert loadgen_version(detail) == "6.0.17"


def _run_sleeping_sut(outdir: Path, scenario: str) -> None:
    import mlperf_loadgen as lg

    def issue(queries: list) -> None:
        time.sleep(0.002 * len(queries))
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in queries])

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(16, 16, lambda s: None, lambda s: None)
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = 200
    settings.min_query_count = 20
    settings.single_stream_expected_latency_ns = 2_000_000
    settings.offline_expected_qps = 500
    log = lg.LogSettings()
    log.log_output.outdir = str(outdir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)


@pytest.mark.parametrize("scenario", ["SingleStream", "Offline"])
def test_the_installed_loadgen_summary_parses(tmp_path: Path, scenario: str) -> None:
    pytest.importorskip("mlperf_loadgen")
    _run_sleeping_sut(tmp_path, scenario)
    summary = read_summary(tmp_path / "mlperf_log_summary.txt")
    detail = parse_detail((tmp_path / "mlperf_log_detail.txt").read_text(encoding="utf-8"))
    assert summary.scenario == scenario
    assert summary.mode == "PerformanceOnly"
    assert summary.valid is (detail["result_validity"] == "VALID")
    assert summary.checks["min_duration"] is detail["result_min_duration_met"]
    assert summary.errors is False
    if scenario == "Offline":
        assert summary.samples_per_second == pytest.approx(detail["result_samples_per_second"])
    else:
        # The percentiles of the summary and the detail log are the same numbers.
        assert summary.percentiles_ns["99.00"] == detail["result_99.00_percentile_latency_ns"]
        # 2 ms of sleep per query: the median cannot be below it.
        assert summary.percentile_ms(50) >= 2.0
        assert summary.target_latency_percentile == 90.0
    assert loadgen_version(detail)
