"""The report: pure row builders first, then the files it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pcb.errors import PcbError
from pcb.fileio import atomic_write_json, read_json
from pcb.layout import RunLayout
from pcb.perf import LatencyStats, PerfRecord, write_perf_records
from pcb.report import (
    NOT_COMPARABLE,
    accuracy_rows,
    best_throughput,
    compare_metric,
    throughput_matrix,
    throughput_rows,
    write_report,
)


def evaluation(top1: float = 0.915, backend: str = "onnxruntime") -> dict[str, Any]:
    return {
        "backend": backend,
        "num_query": 3368,
        "num_gallery": 15913,
        "num_gallery_ids": 751,
        "num_valid_queries": 3368,
        "top1": top1,
        "top5": 0.970,
        "top10": 0.975,
        "mAP": 0.774,
        "cmc": [top1, 0.95, 0.96],
    }


def perf(platform: str, batch: int, ips: float) -> PerfRecord:
    mean = 1000.0 * batch / ips
    return PerfRecord(
        platform=platform,
        backend="onnxruntime",
        batch_size=batch,
        images_per_s=ips,
        latency=LatencyStats(mean, mean, mean, mean, mean),
        iterations=3,
        tool="onnxruntime",
        tool_version="1.0",
        device="Test CPU",
    )


def test_compare_metric_pass_and_fail() -> None:
    diff, verdict = compare_metric(0.915, 0.921, demo=False)
    assert diff == pytest.approx(-0.6)
    assert verdict == "PASS"
    diff, verdict = compare_metric(0.905, 0.921, demo=False)
    assert diff == pytest.approx(-1.6)
    assert verdict == "FAIL"
    assert compare_metric(0.911, 0.921, demo=False)[1] == "PASS"  # exactly one point down
    assert compare_metric(0.95, 0.921, demo=False)[1] == "PASS"  # better is fine


def test_accuracy_rows() -> None:
    rows = accuracy_rows(evaluation(0.915), demo=False)
    assert rows[0] == ["onnxruntime", "top-1", "91.50", "92.1", "-0.60", "PASS"]
    assert rows[1] == ["onnxruntime", "top-5", "97.00", "96.9", "+0.10", "PASS"]
    assert rows[2] == ["onnxruntime", "top-10", "97.50", "98.1", "-0.60", "PASS"]
    assert rows[3][:5] == ["onnxruntime", "mAP", "77.40", "n/a", "n/a"]
    assert accuracy_rows(evaluation(0.905), demo=False)[0][-1] == "FAIL"


def test_demo_rows_are_not_comparable() -> None:
    rows = accuracy_rows(evaluation(0.02), demo=True)
    assert [r[-1] for r in rows[:3]] == [NOT_COMPARABLE] * 3
    assert not any("PASS" in r[-1] or "FAIL" in r[-1] for r in rows)


def test_throughput_rows_and_best() -> None:
    records = [
        perf("cpu-onnxruntime-fp32", 1, 10.0),
        perf("cpu-onnxruntime-fp32", 4, 30.0),
        perf("cpu-onnxruntime-fp32", 16, 25.0),
        perf("gpu-tensorrt-fp16", 4, 900.0),
        perf("gpu-tensorrt-fp16", 16, 1500.0),
    ]
    headers, rows = throughput_rows(throughput_matrix(records))
    assert headers == ["batch", "cpu-onnxruntime-fp32", "gpu-tensorrt-fp16"]
    assert rows[0] == ["1", "10.0", "-"]
    assert rows[1] == ["4", "30.0", "900.0"]
    assert rows[2] == ["16", "25.0", "1500.0"]
    assert rows[3] == ["best", "30.0 (bs4)", "1500.0 (bs16)"]
    assert best_throughput({1: 5.0, 8: 5.0}) == (1, 5.0)  # a tie goes to the smaller batch


def write_run(root: Path, top1: float = 0.915) -> RunLayout:
    layout = RunLayout(root)
    atomic_write_json(layout.eval_path("onnxruntime"), evaluation(top1))
    write_perf_records(
        layout.perf_path("onnxruntime"),
        [perf("cpu-onnxruntime-fp32", 1, 10.0), perf("cpu-onnxruntime-fp32", 8, 40.0)],
    )
    atomic_write_json(
        layout.export_record,
        {
            "checkpoint": "PCB_3_7.pt",
            "checkpoint_md5": "c5bc5ddabcbcc45f127ead797fe8cb35",
            "onnx_md5": "ab" * 16,
            "opset": 11,
            "max_abs_diff": 1e-6,
            "torch_version": "2.13.0",
            "onnx_version": "1.17.0",
            "onnxruntime_version": "1.20.0",
        },
    )
    return layout


def test_write_report_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = write_run(tmp_path)
    report = write_report(layout)
    assert read_json(layout.report_json) == json.loads(json.dumps(report))
    assert report["demo"] is False
    assert report["checkpoint_md5"] == "c5bc5ddabcbcc45f127ead797fe8cb35"
    assert report["counts"]["num_gallery"] == 15913
    assert report["accuracy"]["onnxruntime"]["passed"] is True
    assert report["accuracy"]["onnxruntime"]["comparison"]["top1"]["verdict"] == "PASS"
    assert report["throughput"]["cpu-onnxruntime-fp32"]["best"] == {
        "batch_size": 8,
        "images_per_s": 40.0,
    }
    assert report["versions"]["torch (export)"] == "2.13.0"
    assert report["versions"]["python"]
    markdown = layout.report_md.read_text()
    assert "| top-1" in markdown and "PASS" in markdown and "77.4" in markdown
    assert "40.0 (bs8)" in markdown
    out = capsys.readouterr().out
    assert "PASS" in out and "40.0 (bs8)" in out


def test_failing_accuracy_in_report(tmp_path: Path) -> None:
    report = write_report(write_run(tmp_path, top1=0.905))
    assert report["accuracy"]["onnxruntime"]["passed"] is False


@pytest.mark.parametrize("how", ["synthetic-dataset", "argument"])
def test_demo_detection(tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]) -> None:
    layout = write_run(tmp_path)
    if how == "synthetic-dataset":
        record = read_json(layout.eval_path("onnxruntime"))
        atomic_write_json(layout.eval_path("onnxruntime"), {**record, "synthetic": True})
    report = write_report(layout, demo=True if how == "argument" else None)
    assert report["demo"] is True
    assert report["accuracy"]["onnxruntime"]["passed"] is None
    out = capsys.readouterr().out
    assert NOT_COMPARABLE in out and "PASS" not in out
    assert NOT_COMPARABLE in layout.report_md.read_text()


def test_demo_argument_overrides_the_dataset_flag(tmp_path: Path) -> None:
    layout = write_run(tmp_path)
    record = read_json(layout.eval_path("onnxruntime"))
    atomic_write_json(layout.eval_path("onnxruntime"), {**record, "synthetic": True})
    assert write_report(layout, demo=False)["demo"] is False
def test_perf_only_and_no_export(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    write_perf_records(layout.perf_path("onnxruntime"), [perf("cpu-onnxruntime-fp32", 1, 10.0)])
    report = write_report(layout)
    assert report["accuracy"] == {}
    assert report["checkpoint"] is None
    assert layout.report_md.is_file()


def test_nothing_to_report(tmp_path: Path) -> None:
    with pytest.raises(PcbError, match=r"pcb evaluate.*pcb perf"):
        write_report(RunLayout(tmp_path))


def test_broken_eval_record(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    atomic_write_json(layout.eval_path("onnxruntime"), {"backend": "onnxruntime", "top1": 0.9})
    with pytest.raises(PcbError, match=r"onnxruntime\.json lacks top5"):
        write_report(layout)
