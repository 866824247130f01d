"""The loadgen and torch benchmarks on a real demo run (export + preprocessing): slow."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcb.bench.common import BenchConfig

pytest.importorskip("torch")
pytest.importorskip("mlperf_loadgen")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    from pcb.bench.workspace import prepare_demo_run

    return prepare_demo_run(tmp_path_factory.mktemp("bench"), identities=4)


def _tiny() -> BenchConfig:
    return BenchConfig(
        quick=True,
        threads=2,
        batch_sizes=(2,),
        min_seconds=0.2,
        min_iterations=1,
        loadgen_batch_sizes=(1, 2),
        loadgen_repeats=2,
    )


def test_loadgen_benchmark(demo_run, tmp_path: Path) -> None:
    from pcb.bench.loadgen import bench_loadgen

    result = bench_loadgen(_tiny(), demo_run, tmp_path)
    figures = {f.name: f for f in result.figures}
    valid = figures["LoadGen runs VALID by its rules"]
    # Offline at 1 and 2 (two repeats each) and SingleStream at 1: five LoadGen runs.
    assert valid.unit == "of 5" and valid.met is not None
    overhead = figures["LoadGen Offline / own timer, best batch"]
    assert overhead.value is not None and overhead.value > 0
    assert figures["bs1: Offline images/s (median of 2)"].value > 0
    assert "SingleStream bs1 p50 / p90 / p99" in figures
    per_batch = result.details["per_batch"]
    assert [p["batch_size"] for p in per_batch] == [1, 2]
    assert per_batch[0]["runs"][0]["summary"]["scenario"] == "Offline"


def test_torch_benchmark(demo_run) -> None:
    import torch

    from pcb.bench.torch_backend import bench_torch

    result = bench_torch(_tiny(), demo_run)
    figures = {f.name: f for f in result.figures}
    assert figures["torch fp32 vs onnxruntime, max |diff|"].met is True
    assert figures["torch bf16 vs onnxruntime, mean cosine"].met is True
    gpu = figures["GPU: torch bf16 at its best batch / dense bf16 matmul rate"]
    if not torch.cuda.is_available():
        assert gpu.value is None and gpu.met is None and "no CUDA GPU" in gpu.note
    assert result.details["per_batch"][0]["torch"] > 0
