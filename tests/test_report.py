"""The report of one run folder: what the pipeline's last stage writes into the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_runs import CPU, evaluation, make_run

from pcb.cli.main import main
from pcb.errors import PcbError
from pcb.fileio import atomic_write_json, read_json
from pcb.layout import RunLayout
from pcb.report.accuracy_table import NOT_COMPARABLE, compare_metric, guide_comparison
from pcb.report.comparison import write_report
from pcb.report.render import accuracy_rows, throughput_rows
from pcb.report.throughput_table import best_throughput


def single_run(root: Path, top1: float = 0.915) -> RunLayout:
    return make_run(root, perf={CPU: {1: 10.0, 8: 40.0}}, evals=[evaluation(top1=top1)])


def test_compare_metric_pass_and_fail() -> None:
    diff, verdict = compare_metric(0.915, 0.921, demo=False)
    assert diff == pytest.approx(-0.6)
    assert verdict == "PASS"
    diff, verdict = compare_metric(0.905, 0.921, demo=False)
    assert diff == pytest.approx(-1.6)
    assert verdict == "FAIL"
    assert compare_metric(0.911, 0.921, demo=False)[1] == "PASS"  # exactly one point down
    assert compare_metric(0.95, 0.921, demo=False)[1] == "PASS"  # better is fine
    assert compare_metric(0.5, 0.921, demo=True)[1] == NOT_COMPARABLE


def test_guide_comparison_overall_verdict() -> None:
    assert guide_comparison(evaluation(top1=0.915), demo=False)[1] is True
    assert guide_comparison(evaluation(top1=0.905), demo=False)[1] is False
    assert guide_comparison(evaluation(top1=0.1), demo=True)[1] is None


def test_best_throughput_tie_goes_to_the_smaller_batch() -> None:
    assert best_throughput({1: 5.0, 8: 5.0}) == (1, 5.0)
    assert best_throughput({1: 5.0, 4: 9.0, 8: 7.0}) == (4, 9.0)


def test_write_report_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = single_run(tmp_path)
    report = write_report(layout, plots=False)
    # One set of files: the comparison's names, no report.json / report.md copies (issue 14).
    assert read_json(tmp_path / "comparison.json") == json.loads(json.dumps(report))
    assert layout.report_json == tmp_path / "comparison.json"
    assert (tmp_path / "comparison.md").is_file() and (tmp_path / "comparison.csv").is_file()
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "report.md").exists()
    assert report["demo"] is False
    assert report["checkpoint_md5"] == "c5bc5ddabcbcc45f127ead797fe8cb35"
    assert report["runs"][0]["counts"]["num_gallery"] == 15913
    assert report["accuracy"]["onnxruntime"]["passed"] is True
    assert report["accuracy"]["onnxruntime"]["comparison"]["top1"]["verdict"] == "PASS"
    assert report["throughput"]["cpu-onnxruntime-fp32"]["best"] == {
        "batch_size": 8,
        "images_per_s": 40.0,
    }
    assert report["runs"][0]["export_versions"]["torch"] == "2.13.0"
    assert report["versions"]["python"]
    markdown = layout.report_md.read_text()
    assert "| onnxruntime[^" in markdown and "PASS" in markdown and "77.4" in markdown
    assert "40.0 (bs8)" in markdown
    out = capsys.readouterr().out
    assert "PASS" in out and "40.0 (bs8)" in out


def test_failing_accuracy_in_report(tmp_path: Path) -> None:
    report = write_report(single_run(tmp_path, top1=0.905), plots=False)
    assert report["accuracy"]["onnxruntime"]["passed"] is False
    headers, rows = accuracy_rows(report)
    assert rows[1][-1] == "FAIL"


def test_accuracy_rows(tmp_path: Path) -> None:
    report = write_report(single_run(tmp_path), plots=False)
    headers, rows = accuracy_rows(report)
    assert headers[:5] == ["backend", "top-1 %", "top-5 %", "top-10 %", "mAP %"]
    # No other backend to hold to onnxruntime: no column for it.
    assert not any(h.startswith("vs onnxruntime") for h in headers)
    assert rows[0][:5] == ["guide (published)", "92.1", "96.9", "98.1", "77.4 (paper)"]
    assert rows[1] == ["onnxruntime[2]", "91.50", "97.00", "97.50", "77.40",
                       "-0.60 / +0.10 / -0.60", "PASS"]  # fmt: skip


def test_throughput_rows_single_platform(tmp_path: Path) -> None:
    report = write_report(single_run(tmp_path), plots=False)
    headers, rows = throughput_rows(report)
    assert headers == [
        "batch",
        "cpu-onnxruntime-fp32",
        "guide 310",
        "guide 310P",
        "guide 310P_aoe",
        "guide T4",
    ]
    assert rows[0] == ["source", "measured[1]", *["published[guide]"] * 4]
    assert rows[1] == ["scope", "per process", *["per card"] * 4]
    # A record that does not say what it timed: what onnxruntime's timer always did.
    assert rows[2] == ["timed", "wall (pcb)", *[""] * 4]
    by_batch = {row[0]: row for row in rows[3:]}
    assert list(by_batch) == ["1", "4", "8", "16", "32", "64", "best"]
    assert by_batch["1"][1] == "10.0" and by_batch["4"][1] == "-"
    assert by_batch["best"][1] == "40.0 (bs8)"


@pytest.mark.parametrize("how", ["synthetic-dataset", "argument"])
def test_demo_detection(tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]) -> None:
    layout = single_run(tmp_path)
    if how == "synthetic-dataset":
        record = read_json(layout.eval_path("onnxruntime"))
        atomic_write_json(layout.eval_path("onnxruntime"), {**record, "synthetic": True})
    report = write_report(layout, demo=True if how == "argument" else None, plots=False)
    assert report["demo"] is True
    assert report["accuracy"]["onnxruntime"]["passed"] is None
    out = capsys.readouterr().out
    assert NOT_COMPARABLE in out and "PASS" not in out
    markdown = layout.report_md.read_text()
    assert NOT_COMPARABLE in markdown and "**Demo run** (synthetic data" in markdown
    assert "onnxruntime (synthetic)" in markdown
    assert "not comparable (synthetic)" in markdown


def test_demo_argument_overrides_the_dataset_flag(tmp_path: Path) -> None:
    layout = single_run(tmp_path)
    record = read_json(layout.eval_path("onnxruntime"))
    atomic_write_json(layout.eval_path("onnxruntime"), {**record, "synthetic": True})
    assert write_report(layout, demo=False, plots=False)["demo"] is False


def test_perf_only_and_no_export(tmp_path: Path) -> None:
    layout = make_run(tmp_path, perf={CPU: {1: 10.0}}, md5=None)
    report = write_report(layout, plots=False)
    assert report["accuracy"] == {}
    assert report["runs"][0]["checkpoint"] is None
    assert report["warnings"] == []  # one run: nothing to disagree with
    assert layout.report_md.is_file()


def test_nothing_to_report(tmp_path: Path) -> None:
    with pytest.raises(PcbError, match=r"pcb evaluate.*pcb perf"):
        write_report(RunLayout(tmp_path))


def test_missing_run_folder(tmp_path: Path) -> None:
    with pytest.raises(PcbError, match="does not exist"):
        write_report(RunLayout(tmp_path / "nope"))


def test_broken_eval_record(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    atomic_write_json(layout.eval_path("onnxruntime"), {"backend": "onnxruntime", "top1": 0.9})
    with pytest.raises(PcbError, match=r"onnxruntime\.json lacks top5"):
        write_report(layout)


def test_cli_report_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = single_run(tmp_path / "run")
    assert main(["report", "--run", str(layout.root), "--no-plots"]) == 0
    assert layout.report_json.is_file() and (layout.root / "comparison.csv").is_file()
    assert "40.0 (bs8)" in capsys.readouterr().out


def test_cli_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = single_run(tmp_path / "run")
    code = main(["report", "--run", str(layout.root), "--ratios", "cpu", "--no-plots"])
    assert code == 1
    assert "NUMERATOR/DENOMINATOR" in capsys.readouterr().err
    code = main(["report", "--run", str(layout.root), "--ratios", "x/T4", "--no-plots"])
    assert code == 1
    err = capsys.readouterr().err
    assert "'x'" in err and "cpu-onnxruntime-fp32" in err and "310P_aoe" in err
    with pytest.raises(SystemExit):
        main(["report", "--run", str(layout.root), "--show", "newest"])
