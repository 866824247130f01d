"""The torch backend on the CPU: feature parity with onnxruntime, and its refusals.

The CUDA paths (CUDA graphs, fp16, pinned copies, CUDA-event timing) need a GPU; here they
are checked only for refusing clearly where there is none. scripts/gpu-measure runs them on
a GPU host.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcb.backends import KNOWN_BACKENDS, create_backend
from pcb.errors import PcbError
from pcb.layout import RunLayout

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def exported(demo_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> RunLayout:
    from pcb.export import export_onnx

    layout = RunLayout(tmp_path_factory.mktemp("run"))
    export_onnx(demo_checkpoint, layout)
    return layout


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    # Preprocessed-looking input: ImageNet-normalised values of a smooth random picture.
    rng = np.random.default_rng(3)
    return rng.normal(0.0, 1.0, (3, 3, 384, 128)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(exported: RunLayout, images: np.ndarray) -> np.ndarray:
    engine = create_backend("onnxruntime")
    engine.load(exported.onnx_path, None, threads=2)
    return engine.run(images)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_registered() -> None:
    assert {"torch", "torch-bf16", "torch-fp16"} <= set(KNOWN_BACKENDS)
    assert create_backend("torch-bf16").precision == "bf16"


def test_fp32_matches_onnxruntime(
    exported: RunLayout, images: np.ndarray, reference: np.ndarray
) -> None:
    engine = create_backend("torch")
    engine.load(exported.onnx_path, None, threads=2)
    features = engine.run(images)
    assert features.shape == (3, 2048, 6, 1) and features.dtype == np.float32
    # Both are unit vectors per stripe: the export's own parity bound holds here too.
    assert float(np.abs(features - reference).max()) < 1e-4
    assert engine.platform_name() == "cpu-torch-fp32"
    assert engine.scope == "process"
    described = engine.describe()
    assert described["batchnorm_folded"] and described["channels_last"]
    assert described["graphs"] == "none" and described["device"] == "cpu"


def test_bf16_on_the_cpu_agrees_with_onnxruntime(
    exported: RunLayout, images: np.ndarray, reference: np.ndarray
) -> None:
    engine = create_backend("torch-bf16")
    engine.load(exported.onnx_path, None, threads=2)
    features = engine.run(images)
    assert features.dtype == np.float32
    # Normalised in fp32: unit vectors per stripe whatever the precision of the trunk.
    norms = np.linalg.norm(features[..., 0], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    cosine = _cosine(features, reference)
    assert cosine.min() > 0.99, cosine
    assert engine.platform_name() == "cpu-torch-bf16"


def test_folding_batchnorm_keeps_the_function(demo_checkpoint: Path, images: np.ndarray) -> None:
    from torch import nn

    from pcb.checkpoint import load_checkpoint
    from pcb.torch_backend import fold_batchnorm

    model = load_checkpoint(demo_checkpoint).model.eval()
    folded = fold_batchnorm(model)
    norms = [m for m in folded.base.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == []
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original stays
    with torch.inference_mode():
        batch = torch.from_numpy(images[:2])
        np.testing.assert_allclose(folded(batch), model(batch), atol=2e-5)


def test_checkpoint_found_through_export_json(exported: RunLayout, demo_checkpoint: Path) -> None:
    from pcb.torch_backend import checkpoint_for

    assert checkpoint_for(exported.onnx_path) == demo_checkpoint
    assert checkpoint_for(demo_checkpoint) == demo_checkpoint


def test_changed_checkpoint_is_refused(tmp_path: Path, demo_checkpoint: Path) -> None:
    from pcb.torch_backend import checkpoint_for

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    copy = tmp_path / "ckpt.pt"
    copy.write_bytes(demo_checkpoint.read_bytes())
    record = {"checkpoint": str(copy), "checkpoint_md5": "0" * 32}
    (model_dir / "export.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(PcbError, match="export` again"):
        checkpoint_for(model_dir / "pcb.onnx")
    copy.unlink()
    with pytest.raises(PcbError, match="is not there"):
        checkpoint_for(model_dir / "pcb.onnx")
    (model_dir / "export.json").unlink()
    with pytest.raises(PcbError, match="does not name it"):
        checkpoint_for(model_dir / "pcb.onnx")


def test_refusals_without_a_gpu(exported: RunLayout) -> None:
    from pcb.torch_backend import TorchBackend

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(PcbError, match="sees no CUDA GPU"):
        TorchBackend(device="cuda").load(exported.onnx_path)
    with pytest.raises(PcbError, match="CUDA GPU only"):
        create_backend("torch-fp16").load(exported.onnx_path)
    with pytest.raises(PcbError, match="CUDA graphs need"):
        TorchBackend(device="cpu", graphs="cuda-graphs").load(exported.onnx_path)
    with pytest.raises(PcbError, match="graph mode"):
        TorchBackend(graphs="fast")
    with pytest.raises(PcbError, match="before load"):
        TorchBackend().run(np.zeros((1, 3, 384, 128), np.float32))


def test_wrong_batch_shape(exported: RunLayout) -> None:
    engine = create_backend("torch")
    engine.load(exported.onnx_path, None, threads=1)
    with pytest.raises(PcbError, match="N x 3 x 384 x 128"):
        engine.run(np.zeros((1, 3, 256, 128), np.float32))


def test_device_times_on_the_cpu(exported: RunLayout) -> None:
    engine = create_backend("torch")
    engine.load(exported.onnx_path, None, threads=2)
    times = engine.device_times_ms(batch_size=1, iterations=2, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_infer_stage_runs_with_torch(exported: RunLayout, images: np.ndarray) -> None:
    """The loop every backend goes through (pcb.infer) takes the torch backend as it is."""
    from pcb.infer import backend_model

    engine = create_backend("torch")
    path = backend_model(engine, exported, quiet=True)
    assert path == exported.onnx_path  # the backend itself resolves the checkpoint


def test_perf_stage_measures_torch_as_a_platform(exported: RunLayout) -> None:
    """`python -m pcb perf --backend torch`: LoadGen's records under the torch platform's
    name, which the report shows as a CPU column here (a GPU one on CUDA)."""
    pytest.importorskip("mlperf_loadgen")
    from pcb.cli.main import main
    from pcb.perf import read_perf_records
    from pcb.report.throughput_table import platform_class

    rules = ["--min-duration", "0.1", "--min-queries", "2", "--repeats", "1", "--warmup", "0"]
    argv = ["perf", "--run", str(exported.root), "--backend", "torch", "--batch-sizes", "1"]
    assert main([*argv, *rules, "--threads", "2", "--quiet"]) == 0
    (record,) = read_perf_records(exported.perf_path("torch"))
    assert (record.platform, record.backend, record.tool) == ("cpu-torch-fp32", "torch", "torch")
    assert record.timer.startswith("mlperf-loadgen") and record.images_per_s > 0
    assert platform_class(record.backend, record.tool, record.scope) == "CPU"
    assert platform_class("torch", "torch", "gpu") == "GPU"
