"""The throughput table says what each column timed, and marks figures not to read as exact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from report_runs import GPU, NPU, make_run, perf_record

from pcb.perf import PerfRecord, timing_label, write_perf_records
from pcb.report.comparison import write_report
from pcb.report.render import UNSTABLE_MARK, throughput_notes, throughput_rows

CPU_LOADGEN = ("onnxruntime", "onnxruntime", "process", "cpu-onnxruntime-fp32")
LOADGEN_TIMED = "images/s: LoadGen Offline samples per second (wall time from issue to completion)"


def loadgen_record(batch: int, ips: float, stable: bool, valid: bool) -> PerfRecord:
    return replace(
        perf_record(CPU_LOADGEN, batch, ips),
        timed=LOADGEN_TIMED,
        timer="mlperf-loadgen 6.0.17",
        loadgen_valid=valid,
        repeats=3,
        cv=0.02 if stable else 0.21,
        stable=stable,
        load_before=[0.4, 0.3, 0.2],
        load_after=[2.5, 1.0, 0.5] if not stable else [0.5, 0.3, 0.2],
    )


def test_labels_say_what_each_tool_timed() -> None:
    assert timing_label(loadgen_record(1, 10.0, True, True)) == "wall (LoadGen)"
    # Records written before the fields existed: what their tool times.
    assert timing_label(perf_record(NPU, 1, 10.0)) == "NPU compute (ais_bench)"
    assert timing_label(perf_record(GPU, 1, 10.0)) == "GPU compute (trtexec)"
    assert timing_label(perf_record(CPU_LOADGEN, 1, 10.0)) == "wall (pcb)"


def test_unstable_figures_are_marked_and_explained(tmp_path: Path) -> None:
    layout = make_run(tmp_path, perf={NPU: {1: 100.0, 8: 400.0}})
    records = [loadgen_record(1, 10.0, True, True), loadgen_record(8, 40.0, False, False)]
    write_perf_records(layout.perf_path("onnxruntime"), records)
    report = write_report(layout, plots=False)

    cell = report["throughput"]["cpu-onnxruntime-fp32"]["cells"]["8"]["measurements"][0]
    assert cell["stable"] is False and cell["loadgen_valid"] is False and cell["cv"] == 0.21
    assert cell["timer"] == "mlperf-loadgen 6.0.17"
    headers, rows = throughput_rows(report)
    column = headers.index("cpu-onnxruntime-fp32")
    npu = headers.index("Ascend310P3")
    timed = next(row for row in rows if row[0] == "timed")
    assert timed[column] == "wall (LoadGen)" and timed[npu] == "NPU compute (ais_bench)"
    by_batch = {row[0]: row for row in rows}
    assert by_batch["8"][column] == UNSTABLE_MARK + "40.0"
    assert by_batch["1"][column] == "10.0"  # stable: printed as it is
    assert by_batch["8"][npu] == "400.0"  # says nothing about stability: no mark

    notes = " ".join(throughput_notes(report))
    assert f"cpu-onnxruntime-fp32 timed: {LOADGEN_TIMED}" in notes
    assert "cpu-onnxruntime-fp32 bs8 (3 repeats, CV 21.0 %, load average 0.40 -> 2.50)" in notes
    assert "bs1 (" not in notes
    assert "LoadGen called the runs of cpu-onnxruntime-fp32 bs8 INVALID" in notes
    markdown = layout.report_md.read_text()
    assert UNSTABLE_MARK + "40.0" in markdown and "NPU compute (ais_bench)" in markdown


def test_stable_runs_add_no_warning(tmp_path: Path) -> None:
    layout = make_run(tmp_path)
    write_perf_records(layout.perf_path("onnxruntime"), [loadgen_record(1, 10.0, True, True)])
    notes = " ".join(throughput_notes(write_report(layout, plots=False)))
    assert "unstable" not in notes and "INVALID" not in notes
