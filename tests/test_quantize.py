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
    # Centred, the error is measured against what tells images apart: lower on this data.
    assert 0.5 < result["cosine_centred_mean"] < result["cosine_mean"]
    assert 0.9 < result["fp32_cosine_between_images"] < 1.0
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


def test_centred_cosine_sees_an_error_a_shared_component_hides() -> None:
    from pcb.quantize import centred_cosine_agreement, mean_cosine_between_images

    rng = np.random.default_rng(0)
    shared = 10.0 * rng.normal(size=64)  # what every image's feature has in common
    reference = shared + rng.normal(size=(200, 64))
    candidate = reference + 0.5 * rng.normal(size=reference.shape)  # the error
    assert mean_cosine_between_images(reference) > 0.95  # nearly one vector
    assert cosine_agreement(reference, candidate).mean() > 0.998  # the error hidden
    # Against the per-image part (unit variance per dimension), an error of 0.5: cos ~ 0.89.
    assert 0.85 < centred_cosine_agreement(reference, candidate).mean() < 0.93
    # Identical features agree fully either way; fewer than two images have no "between".
    np.testing.assert_allclose(centred_cosine_agreement(reference, reference), 1.0)
    with pytest.raises(PcbError, match="at least two images"):
        mean_cosine_between_images(reference[:1])


def _outputs(demo: DemoRun, *models: onnx.ModelProto) -> list[np.ndarray]:
    """Each model's output for the same two query images."""
    images = np.stack(
        [
            np.fromfile(p, dtype=np.float32).reshape(3, 384, 128)
            for p in sorted(demo.layout.bins_dir("query").glob("*.bin"))[:2]
        ]
    )
    outputs = []
    for model in models:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs.append(session.run(None, {session.get_inputs()[0].name: images})[0])
    return outputs


def test_padding_the_first_convolution_keeps_the_float_function(demo: DemoRun) -> None:
    from pcb.quantize import FIRST_CONV_CHANNELS, PAD_NODE, pad_first_conv

    original = onnx.load(str(demo.layout.onnx_path))
    padded = pad_first_conv(onnx.load(str(demo.layout.onnx_path)))
    assert [n.name for n in padded.graph.node].count(PAD_NODE) == 1
    outputs = _outputs(demo, original, padded)
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    # Already padded: nothing more is added.
    again = pad_first_conv(padded)
    assert [n.name for n in again.graph.node].count(PAD_NODE) == 1
    # The int8 model's first convolution reads 4 channels.
    int8 = onnx.load(str(int8_model_path(demo.layout.onnx_path)))
    weights = {t.name: t for t in int8.graph.initializer}
    first = next(n for n in int8.graph.node if n.op_type == "Conv")
    kernel = first.input[1]
    while kernel not in weights:  # through its DequantizeLinear to the int8 constant
        kernel = next(n for n in int8.graph.node if kernel in n.output).input[0]
    assert list(weights[kernel].dims)[1] == FIRST_CONV_CHANNELS
    assert (
        json.loads(record_path(demo.layout).read_text())["recipe"]["first_conv_input_channels"]
        == FIRST_CONV_CHANNELS
    )


@pytest.mark.parametrize("opset", [17, 18])
def test_stripe_pool_as_reduce_mean_keeps_the_float_function(demo: DemoRun, opset: int) -> None:
    from onnx import version_converter

    from pcb.quantize import STRIPE_NODES, pool_stripes_by_reduce_mean

    original = version_converter.convert_version(onnx.load(str(demo.layout.onnx_path)), opset)
    rewritten = pool_stripes_by_reduce_mean(
        onnx.ModelProto.FromString(original.SerializeToString())
    )
    kinds = [n.op_type for n in rewritten.graph.node]
    assert "AveragePool" not in kinds
    assert [n.name for n in rewritten.graph.node if n.name in STRIPE_NODES] == list(STRIPE_NODES)
    before, after = _outputs(demo, original, rewritten)
    assert after.shape == before.shape == (2, 2048, 6, 1)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    # Already rewritten: nothing more is added.
    again = pool_stripes_by_reduce_mean(rewritten)
    assert len(again.graph.node) == len(rewritten.graph.node)


def test_a_pool_that_is_not_whole_width_stripes_is_left_alone(demo: DemoRun) -> None:
    from onnx import helper

    from pcb.quantize import pool_stripes_by_reduce_mean

    model = onnx.load(str(demo.layout.onnx_path))
    pool = next(n for n in model.graph.node if n.op_type == "AveragePool")
    for attribute in pool.attribute:  # 4 x 4 windows: two per stripe across the width
        if attribute.name in ("kernel_shape", "strides"):
            attribute.CopyFrom(helper.make_attribute(attribute.name, [4, 4]))
    left = pool_stripes_by_reduce_mean(model)
    assert [n.op_type for n in left.graph.node].count("AveragePool") == 1
    assert "ReduceMean" not in [n.op_type for n in left.graph.node]


def test_the_int8_model_pools_its_stripes_in_float_by_reduce_mean(demo: DemoRun) -> None:
    from pcb.quantize import STRIPE_NODES

    int8 = onnx.load(str(int8_model_path(demo.layout.onnx_path)))
    nodes = {n.name: n for n in int8.graph.node}
    assert "AveragePool" not in [n.op_type for n in int8.graph.node]
    mean = nodes[STRIPE_NODES[1]]
    # Nothing quantises its output: the features are pooled and normalised in float32.
    assert not any(
        n.op_type == "QuantizeLinear" and mean.output[0] in n.input for n in nodes.values()
    )
