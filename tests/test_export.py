from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pcb.checkpoint import load_checkpoint
from pcb.errors import PcbError
from pcb.export import export_onnx, onnx_bytes, parity_max_abs_diff
from pcb.layout import RunLayout


@pytest.fixture(scope="module")
def exported(demo_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> RunLayout:
    layout = RunLayout(tmp_path_factory.mktemp("run"))
    export_onnx(demo_checkpoint, layout, static_batch_sizes=[2])
    return layout


def test_onnx_interface(exported: RunLayout):
    model = onnx.load(exported.onnx_path)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [11]
    [graph_input] = model.graph.input
    assert graph_input.name == "input_1"
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 384, 128]
    assert model.graph.output[0].name == "output_1"
    output_shape = model.graph.output[0].type.tensor_type.shape
    out_dims = [d.dim_param or d.dim_value for d in output_shape.dim]
    assert out_dims == ["batch", 2048, 6, 1]


def test_dynamic_batch_matches_pytorch(exported: RunLayout, demo_checkpoint: Path):
    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(3).standard_normal((3, 3, 384, 128)).astype(np.float32)
    [features] = session.run(["output_1"], {"input_1": batch})
    with torch.no_grad():
        expected = load_checkpoint(demo_checkpoint).model(torch.from_numpy(batch)).numpy()
    assert features.shape == (3, 2048, 6, 1)
    assert np.abs(features - expected).max() < 1e-4


def test_static_model_has_a_fixed_batch(exported: RunLayout):
    model = onnx.load(exported.static_onnx_path(2))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 384, 128]


def test_export_record(exported: RunLayout):
    record = json.loads(exported.export_record.read_text())
    assert record["opset"] == 11
    assert record["checkpoint_format"] == "pickled-model"
    assert 0 <= record["max_abs_diff"] < 1e-4
    assert record["static_models"] == {"2": "pcb_bs2.onnx"}


def test_export_is_byte_identical(exported: RunLayout, demo_checkpoint: Path, tmp_path: Path):
    again = RunLayout(tmp_path)
    export_onnx(demo_checkpoint, again)
    assert again.onnx_path.read_bytes() == exported.onnx_path.read_bytes()


def test_parity_failure_writes_nothing(demo_checkpoint: Path, tmp_path: Path, monkeypatch):
    import pcb.export as export_module

    monkeypatch.setattr(export_module, "parity_max_abs_diff", lambda model, data: 0.5)
    layout = RunLayout(tmp_path / "run")
    with pytest.raises(PcbError, match="disagrees with PyTorch"):
        export_onnx(demo_checkpoint, layout)
    assert not layout.onnx_path.exists()


def test_parity_detects_a_different_model(demo_checkpoint: Path):
    model = load_checkpoint(demo_checkpoint).model
    data = onnx_bytes(model)
    with torch.no_grad():
        # A shift, not a scale: with zero BN biases the network is scale-invariant.
        model.base.layer1[0].conv1.weight.add_(0.05)
    assert parity_max_abs_diff(model, data) > 1e-3
