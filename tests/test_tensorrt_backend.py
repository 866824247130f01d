"""The TensorRT Python-API code paths (backend, int8 calibration) against a fake `tensorrt`.

No GPU here: tests/doubles/tensorrt/fake_tensorrt.py stands in for the TensorRT 10 Python API
and the CUDA runtime (device memory in a dict), so what is checked is pcb's side: engine checks,
shapes, buffer sizes, batching, copies in and out, the calibrator's feeding and cache writing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from pcb.backends import create_backend, cudart
from pcb.backends.tensorrt_backend import TensorRTBackend
from pcb.constants import INPUT_SHAPE
from pcb.errors import PcbError
from pcb.fileio import read_json
from pcb.layout import RunLayout
from pcb.tensorrt import calibration
from pcb.tensorrt.engine_cache import calibration_cache_path, calibration_record_path

_SPEC = importlib.util.spec_from_file_location(
    "fake_tensorrt", Path(__file__).parent / "doubles" / "tensorrt" / "fake_tensorrt.py"
)
fake = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fake)


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch):
    module = fake.module()
    fake.MEMORY.clear()
    cuda = fake.FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(cudart.CudaRuntime, "load", classmethod(lambda cls, candidates=None: cuda))
    module.cuda = cuda
    return module


def write_engine(tmp_path: Path, max_batch: int = 4, **kwargs) -> Path:
    path = tmp_path / f"pcb_bs{max_batch}.engine"
    path.write_bytes(fake.engine_bytes(max_batch, **kwargs))
    return path


def images(count: int) -> np.ndarray:
    return np.random.default_rng(count).standard_normal((count, *INPUT_SHAPE), dtype=np.float32)


def test_factory_needs_no_tensorrt_to_create():
    backend = create_backend("tensorrt")
    assert isinstance(backend, TensorRTBackend) and backend.name == "tensorrt"


def test_runs_batches_larger_than_the_engine_in_pieces(trt, tmp_path: Path):
    backend = TensorRTBackend(device=1)
    backend.load(write_engine(tmp_path, 4), batch_size=4)
    assert trt.cuda.device == 1 and backend.max_batch == 4 and backend.version() == "10.0.1"
    batch = images(6)
    features = backend.run(batch)
    assert features.shape == (6, 2048, 6, 1) and features.dtype == np.float32
    expected = batch.reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(features[:, 0, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(features[:, 2047, 5, 0], expected, rtol=1e-5)
    backend.close()
    assert not fake.MEMORY  # every device buffer freed


def test_fp16_outputs_come_back_as_float32(trt, tmp_path: Path):
    backend = TensorRTBackend()
    backend.load(write_engine(tmp_path, 2, dtype="float16"))
    features = backend.run(images(2))
    assert features.dtype == np.float32
    backend.close()


def test_refuses_an_onnx_a_missing_file_and_a_foreign_engine(trt, tmp_path: Path):
    backend = TensorRTBackend()
    with pytest.raises(PcbError, match="runs a saved engine, not"):
        backend.load(tmp_path / "pcb.onnx")
    with pytest.raises(PcbError, match="engine not found"):
        backend.load(tmp_path / "none.engine")
    foreign = tmp_path / "foreign.engine"
    foreign.write_bytes(b"\x00plan of TensorRT 8.6")
    with pytest.raises(PcbError, match=r"cannot load the engine .* another TensorRT version"):
        backend.load(foreign)


def test_refuses_an_engine_that_is_not_pcbs(trt, tmp_path: Path):
    with pytest.raises(PcbError, match=r"has tensors \['images', 'output_1'\]"):
        TensorRTBackend().load(write_engine(tmp_path, 4, tensors=("images", "output_1")))


def test_refuses_a_batch_beyond_the_profile(trt, tmp_path: Path):
    with pytest.raises(PcbError, match="at most 4 images a batch, asked for 16"):
        TensorRTBackend().load(write_engine(tmp_path, 4), batch_size=16)


def test_run_before_load_and_bad_shapes(trt, tmp_path: Path):
    backend = TensorRTBackend()
    with pytest.raises(PcbError, match="before load"):
        backend.run(images(1))
    backend.load(write_engine(tmp_path, 4))
    with pytest.raises(PcbError, match="expected N x 3 x 384 x 128"):
        backend.run(np.zeros((1, 3, 256, 128), dtype=np.float32))


def test_without_tensorrt_the_error_says_where_to_run(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    with pytest.raises(PcbError, match="run the stage in the tensorrt image"):
        TensorRTBackend().load(write_engine(tmp_path, 1))


def test_cudart_not_found_lists_what_was_tried():
    with pytest.raises(PcbError, match=r"libcudart\) could not be loaded; tried: /no/libcudart"):
        cudart.CudaRuntime.load(["/no/libcudart.so"])


# ---- int8 calibration ------------------------------------------------------------------------


def test_picking_is_even_and_deterministic():
    stems = {"gallery": [f"g{i}" for i in range(10)], "query": [f"q{i}" for i in range(5)]}
    picks = calibration.pick_images(stems, 5)
    assert picks == [("gallery", "g0"), ("gallery", "g3"), ("gallery", "g6"), ("gallery", "g9"),
                     ("query", "q2")]  # fmt: skip
    assert calibration.pick_images(stems, 100) == [
        *[("gallery", f"g{i}") for i in range(10)],
        *[("query", f"q{i}") for i in range(5)],
    ]
    assert calibration.usable(picks, 2) == picks[:4]
    with pytest.raises(PcbError, match="do not fill one batch of 8"):
        calibration.usable(picks, 8)
    with pytest.raises(PcbError, match="run `pcb preprocess` first"):
        calibration.pick_images({}, 4)
    assert calibration.picks_md5(picks) != calibration.picks_md5(picks[:4])


@pytest.fixture
def run(tmp_path: Path) -> RunLayout:
    layout = RunLayout(tmp_path / "run")
    layout.model_dir.mkdir(parents=True)
    layout.onnx_path.write_bytes(b"onnx stand-in")
    for split, count in (("query", 5), ("gallery", 12)):
        folder = layout.bins_dir(split)
        folder.mkdir(parents=True)
        lines = []
        for index in range(count):
            stem = f"{split}{index:02d}"
            np.full(INPUT_SHAPE, index, dtype=np.float32).tofile(folder / f"{stem}.bin")
            lines.append(f"{index} ./{stem}.bin 128 384")
        layout.info_path(split).write_text("\n".join(lines) + "\n")
    return layout


def test_calibration_writes_the_cache_and_its_record(trt, run: RunLayout):
    cache = calibration.build_calibration_cache(run, images=8, batch_size=4, device=2, quiet=True)
    assert cache == calibration_cache_path(run)
    assert cache.read_bytes().startswith(b"TRT-100001-EntropyCalibration2")
    [build] = fake.BUILDS
    assert build["flags"] == {"INT8"} and build["fed"] == 2 and build["batch"] == 4
    # Bins hold their index: the 8 picks spread over gallery (12) then query (5).
    assert build["means"] == [np.mean([0, 2, 4, 6]), np.mean([8, 10, 0, 2])]
    record = read_json(calibration_record_path(run))
    assert record["spec"]["images"] == 8 and record["spec"]["tensorrt_version"] == "10.0.1"
    assert record["batches"] == 2 and record["splits"] == ["gallery", "query"]
    assert trt.cuda.device == 2
    assert not fake.MEMORY  # the calibrator's buffer freed


def test_calibration_is_kept_while_current(trt, run: RunLayout):
    calibration.build_calibration_cache(run, images=8, batch_size=4, quiet=True)
    calibration.build_calibration_cache(run, images=8, batch_size=4, quiet=True)
    assert len(fake.BUILDS) == 1
    calibration.build_calibration_cache(run, images=12, batch_size=4, quiet=True)
    calibration.build_calibration_cache(run, images=12, batch_size=4, quiet=True, force=True)
    assert len(fake.BUILDS) == 3
    assert calibration.calibration_md5(run)


def test_calibration_reports_a_bad_model(trt, run: RunLayout):
    run.onnx_path.write_bytes(b"garbage")
    with pytest.raises(PcbError, match="TensorRT cannot parse .*not an ONNX model"):
        calibration.build_calibration_cache(run, images=4, batch_size=4, quiet=True)


def test_calibration_md5_without_a_cache(tmp_path: Path):
    with pytest.raises(PcbError, match="run `python -m pcb trt-calibrate --run"):
        calibration.calibration_md5(RunLayout(tmp_path))
