"""The backend factory and the onnxruntime backend, on a tiny stand-in for PCB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pcb.backends import KNOWN_BACKENDS, create_backend
from pcb.errors import PcbError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from tiny_model import make_tiny_model  # noqa: E402


def test_factory_knows_onnxruntime() -> None:
    assert "onnxruntime" in KNOWN_BACKENDS
    backend = create_backend("onnxruntime")
    assert backend.name == "onnxruntime"
    assert backend.version() == ort.__version__


def test_factory_unknown_name_lists_known_ones() -> None:
    with pytest.raises(PcbError, match="unknown backend 'tensorflow'.*onnxruntime"):
        create_backend("tensorflow")


def test_onnxruntime_runs_a_batch(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "pcb.onnx")
    backend = create_backend("onnxruntime")
    backend.load(model, None, threads=1)
    batch = np.random.default_rng(0).standard_normal((3, 3, 384, 128), dtype=np.float32)
    features = backend.run(batch)
    assert features.shape == (3, 2048, 6, 1)
    assert features.dtype == np.float32
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run(["output_1"], {"input_1": batch})[0]
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_onnxruntime_missing_model(tmp_path: Path) -> None:
    with pytest.raises(PcbError, match="pcb export"):
        create_backend("onnxruntime").load(tmp_path / "absent.onnx")


def test_onnxruntime_rejects_wrong_input_name(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "x.onnx", input_name="images")
    with pytest.raises(PcbError, match=r"\['images'\].*input_1"):
        create_backend("onnxruntime").load(model, threads=1)


def test_onnxruntime_rejects_wrong_input_shape(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "x.onnx", height=256)
    with pytest.raises(PcbError, match=r"input input_1 is tensor\(float\) \[.*256"):
        create_backend("onnxruntime").load(model, threads=1)


def test_onnxruntime_fixed_batch_mismatch(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "bs2.onnx", batch=2)
    with pytest.raises(PcbError, match="fixed batch of 2"):
        create_backend("onnxruntime").load(model, 4, threads=1)
    backend = create_backend("onnxruntime")
    backend.load(model, None, threads=1)
    with pytest.raises(PcbError, match="fixed batch of 2"):
        backend.run(np.zeros((1, 3, 384, 128), dtype=np.float32))


def test_onnxruntime_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "pcb.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(PcbError, match="cannot load"):
        create_backend("onnxruntime").load(path, threads=1)


def test_run_before_load() -> None:
    with pytest.raises(PcbError, match="load"):
        create_backend("onnxruntime").run(np.zeros((1, 3, 384, 128), dtype=np.float32))


def test_wrong_batch_shape(tmp_path: Path) -> None:
    backend = create_backend("onnxruntime")
    backend.load(make_tiny_model(tmp_path / "pcb.onnx"), threads=1)
    with pytest.raises(PcbError, match="shape"):
        backend.run(np.zeros((1, 3, 256, 128), dtype=np.float32))
