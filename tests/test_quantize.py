"""Static INT8 quantisation and the int8 backend, on a small demo run (untrained PCB)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcb.errors import PcbError
from pcb.layout import RunLayout

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from pcb.backends import create_backend  # noqa: E402
from pcb.bench.int8 import TARGET_MEAN_COSINE, TARGET_TOP1_POINTS, agreement  # noqa: E402
from pcb.bench.workspace import DemoRun, prepare_demo_run  # noqa: E402
from pcb.infer import perf_platform, run_inference, run_perf  # noqa: E402
from pcb.quantize import (  # noqa: E402
    calibration_bins,
    cosine_agreement,
    ensure_quantized,
    int8_model_path,
    record_path,
)

IDENTITIES = 8
# Fewer than the default 64: calibration dominates the fixture's time, and 16 images already
# give ranges within the agreement target on this data.
CALIBRATION = 16


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    run = prepare_demo_run(tmp_path_factory.mktemp("int8"), identities=IDENTITIES)
    ensure_quantized(run.layout, calibration_images=CALIBRATION, quiet=True)
    return run


def _opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_int8_copy_is_quantised_and_the_export_stays_opset_11(demo: DemoRun) -> None:
    int8 = int8_model_path(demo.layout.onnx_path)
    assert int8.name == "pcb_int8.onnx"
    assert _opset(demo.layout.onnx_path) == 11
    assert _opset(int8) >= 13  # per-channel QuantizeLinear needs an `axis`
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    record = json.loads(record_path(demo.layout).read_text())
    assert record["calibration_images"] == len(calibration_bins(demo.layout, CALIBRATION))
    assert record["recipe"]["format"] == "QDQ"


def test_int8_features_agree_with_fp32_on_the_demo(demo: DemoRun) -> None:
    fp32 = create_backend("onnxruntime")
    fp32.load(demo.layout.onnx_path, None, threads=0)
    int8 = create_backend("onnxruntime-int8")
    int8.load(demo.layout.onnx_path, None, threads=0)  # finds pcb_int8.onnx beside it
    result = agreement(demo.dataset_root, demo.layout, fp32, int8)
    assert result["cosine_mean"] >= TARGET_MEAN_COSINE
    assert result["cosine_min"] >= 0.98
    # 16 queries: one changed top-1 is 6.25 points, so within 1 point means none changed.
    assert 100 * abs(result["top1"]["int8"] - result["top1"]["fp32"]) <= TARGET_TOP1_POINTS


def test_quantising_again_is_a_no_op_unless_forced(demo: DemoRun, capsys) -> None:
    int8 = int8_model_path(demo.layout.onnx_path)
    before = int8.stat().st_mtime_ns
    assert ensure_quantized(demo.layout, calibration_images=CALIBRATION) == int8
    assert "is current" in capsys.readouterr().out
    assert int8.stat().st_mtime_ns == before


def test_a_changed_model_file_is_quantised_again(tmp_path: Path, demo: DemoRun) -> None:
    # A copy of the run whose int8 record names another float model must be redone.
    layout = RunLayout(tmp_path / "run")
    for split in ("query", "gallery"):
        target = layout.bins_dir(split)
        target.mkdir(parents=True)
        for source in sorted(demo.layout.bins_dir(split).glob("*.bin"))[:2]:
            (target / source.name).write_bytes(source.read_bytes())
    layout.model_dir.mkdir(parents=True)
    layout.onnx_path.write_bytes(demo.layout.onnx_path.read_bytes())
    int8_model_path(layout.onnx_path).write_bytes(b"stale")
    record = json.loads(record_path(demo.layout).read_text())
    record_path(layout).write_text(json.dumps({**record, "source_md5": "0" * 32}))
    path = ensure_quantized(layout, quiet=True)
    assert path.read_bytes() != b"stale"
    assert json.loads(record_path(layout).read_text())["calibration_images"] == 4


def test_calibration_needs_preprocessed_images(tmp_path: Path) -> None:
    with pytest.raises(PcbError, match="pcb preprocess"):
        calibration_bins(RunLayout(tmp_path))


def test_calibration_images_are_spread_over_both_splits(demo: DemoRun) -> None:
    picked = calibration_bins(demo.layout, count=6)
    assert len(picked) == 6
    assert {p.parent.name for p in picked} == {"query", "gallery"}
    assert picked == calibration_bins(demo.layout, count=6)  # deterministic


def test_int8_backend_without_a_quantised_model_says_how_to_make_one(tmp_path: Path) -> None:
    model = tmp_path / "pcb.onnx"
    model.write_bytes(b"")
    with pytest.raises(PcbError, match="pcb quantize"):
        create_backend("onnxruntime-int8").load(model)


def test_int8_inference_and_perf_through_the_stage_functions(demo: DemoRun) -> None:
    counts = run_inference(demo.layout, backend="onnxruntime-int8", batch_size=8, quiet=True)
    assert counts["query"] == 2 * IDENTITIES
    dumps = sorted(demo.layout.dumps_dir("onnxruntime-int8", "query").glob("*_0.bin"))
    assert len(dumps) == counts["query"]
    record = json.loads(
        (demo.layout.dumps_dir("onnxruntime-int8", "query").parent / "query.json").read_text()
    )
    assert record["model"].endswith("pcb_int8.onnx")
    records = run_perf(
        demo.layout, backend="onnxruntime-int8", batch_sizes=(2,), iterations=1, quiet=True
    )
    assert records[0].platform == "cpu-onnxruntime-int8" == perf_platform("onnxruntime-int8")
    assert records[0].extra["precision"] == "int8"


def test_cosine_agreement() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    b = np.array([[2.0, 0.0], [1.0, -1.0]], dtype=np.float32)
    np.testing.assert_allclose(cosine_agreement(a, b), [1.0, 0.0], atol=1e-12)
    with pytest.raises(PcbError, match="differ in shape"):
        cosine_agreement(a, b[:1])
