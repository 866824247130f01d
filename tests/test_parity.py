"""The parity stage: per-image cosine between a backend's features and onnxruntime's, the top-1
difference, written into the backend's eval record and shown by the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcb.cli.main import main
from pcb.constants import FEATURE_BYTES
from pcb.errors import PcbError
from pcb.fileio import atomic_write_json
from pcb.layout import RunLayout
from pcb.parity import cosine, parity_figures, run_parity
from pcb.report.comparison import write_comparison

DIM = FEATURE_BYTES // 4
NPU = "Ascend310P3-ais_bench"


def write_dumps(layout: RunLayout, backend: str, features: dict[str, np.ndarray], suffix="_0"):
    for name, feature in features.items():
        split, stem = name.split("/")
        path = layout.dumps_dir(backend, split) / f"{stem}{suffix}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        feature.astype(np.float32).tofile(path)


def evaluation(layout: RunLayout, backend: str, top1: float) -> None:
    atomic_write_json(
        layout.eval_path(backend),
        {"backend": backend, "top1": top1, "top5": 0.97, "top10": 0.98, "mAP": 0.77},
    )


@pytest.fixture
def run(tmp_path: Path) -> tuple[RunLayout, dict[str, np.ndarray]]:
    layout = RunLayout(tmp_path / "run")
    rng = np.random.default_rng(0)
    names = [f"query/q{i}" for i in range(3)] + [f"gallery/g{i}" for i in range(4)]
    reference = {n: rng.standard_normal(DIM) for n in names}
    write_dumps(layout, "onnxruntime", reference)
    evaluation(layout, "onnxruntime", 0.921)
    return layout, reference


def test_cosine():
    a = np.array([1.0, 0.0])
    assert cosine(a, a * 3) == pytest.approx(1.0)
    assert cosine(a, np.array([0.0, 2.0])) == pytest.approx(0.0)
    assert cosine(np.zeros(2), np.zeros(2)) == 1.0
    assert cosine(np.zeros(2), a) == 0.0


def test_figures_and_verdict():
    cosines = {"query/a": 0.9999, "query/b": 0.98, "gallery/c": 0.995}
    figures, detail = parity_figures(cosines, 0.99, 0.905, 0.921)
    assert figures["cos_min"] == 0.98 and figures["cos_mean"] == pytest.approx(0.99163333)
    assert figures["below_threshold"] == 1
    assert figures["top1_diff"] == pytest.approx(-1.6)
    assert figures["top1_verdict"].startswith("FLAG")
    assert detail["worst"][0] == {"image": "query/b", "cos": 0.98}
    assert detail["below_threshold"] == ["query/b"] and detail["images"] == 3
    figures, _ = parity_figures(cosines, 0.99, 0.911, 0.921)  # exactly one point: within
    assert figures["top1_verdict"] == "PASS"
    figures, _ = parity_figures(cosines, 0.99, None, 0.921)
    assert figures["top1_diff"] is None and "top1_verdict" not in figures


def test_parity_written_into_the_eval_record(run, capsys):
    layout, reference = run
    # An NPU's features: the reference rounded through float16, one image clearly off.
    npu = {n: f.astype(np.float16).astype(np.float64) for n, f in reference.items()}
    npu["gallery/g2"] = -reference["gallery/g2"]
    write_dumps(layout, NPU, npu, suffix="_1")  # the old benchmark tool's names work too
    evaluation(layout, NPU, 0.905)
    code = main(["parity", "--run", str(layout.root), "--backend", NPU, "--threshold", "0.999"])
    assert code == 0
    out = capsys.readouterr().out
    assert "7 images" in out and "1 below 0.999 (worst: gallery/g2)" in out
    assert "top-1 difference: -1.60 points: FLAG" in out
    record = json.loads(layout.eval_path(NPU).read_text())
    parity = record["parity"]
    assert parity["cos_min"] == pytest.approx(-1.0)
    assert parity["below_threshold"] == 1 and parity["threshold"] == 0.999
    assert record["parity_detail"]["reference"] == "onnxruntime"
    assert record["top1"] == 0.905  # the rest of the record is kept

    report = write_comparison([layout.root], plots=False)
    assert report["accuracy"][NPU]["parity"]["top1_verdict"].startswith("FLAG")
    markdown = layout.report_md.read_text()
    section = markdown.split("## Feature parity")[1]
    assert "cos_min" in section and "FLAG > 1 point" in section


def test_different_images_are_refused(run):
    layout, reference = run
    partial = {n: f for n, f in reference.items() if n != "query/q1"}
    write_dumps(layout, NPU, partial)
    evaluation(layout, NPU, 0.92)
    with pytest.raises(PcbError, match=r"query: .* 1 only in .*onnxruntime \(e.g. q1\)"):
        run_parity(layout, NPU)


def test_needs_both_evaluations_and_a_sane_threshold(run):
    layout, reference = run
    write_dumps(layout, NPU, reference)
    with pytest.raises(PcbError, match=r"eval/Ascend310P3-ais_bench.json not found: evaluate"):
        run_parity(layout, NPU)
    evaluation(layout, NPU, 0.92)
    with pytest.raises(PcbError, match=r"threshold 1.5 is not in \(0, 1\]"):
        run_parity(layout, NPU, threshold=1.5)
    with pytest.raises(PcbError, match="against itself"):
        run_parity(layout, "onnxruntime")
    figures = run_parity(layout, NPU)
    assert figures["cos_min"] == pytest.approx(1.0) and figures["top1_verdict"] == "PASS"
