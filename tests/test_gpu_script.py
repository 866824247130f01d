"""The prepared GPU measurement (pcb.bench.gpu_script), run here on the CPU.

Its CUDA paths (CUDA graphs, CUDA events, pinned copies, fp16) are the torch backend's and
need a GPU; here the script's own logic and its whole run on the CPU are tested.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from pcb.bench import gpu_script

torch = pytest.importorskip("torch")


def test_flops_per_image_counted_from_the_model_is_pcbs(demo_checkpoint: Path) -> None:
    from pcb.checkpoint import load_checkpoint

    macs = gpu_script.conv_macs_per_image(load_checkpoint(demo_checkpoint).model)
    # facts.md: about 12.2 GFLOP (2 x MAC) per 384 x 128 image.
    assert 12.0e9 < 2 * macs < 12.4e9


def test_time_bounded_runs_for_the_time_and_the_count() -> None:
    start = time.perf_counter()
    times = gpu_script.time_bounded(lambda: time.sleep(0.01), seconds=0.05, min_calls=2)
    assert time.perf_counter() - start >= 0.05 and len(times) >= 2
    assert all(t >= 10.0 for t in times)
    assert gpu_script.time_bounded(lambda: 7.0, seconds=0.0, min_calls=3) == [7.0] * 3


def test_repeated_rate_reports_spread_and_load() -> None:
    measured = gpu_script.repeated_rate(lambda: 10.0, batch=4, seconds=0.0)
    assert measured["images_per_s"] == pytest.approx(400.0)
    assert measured["spread"]["stable"] and len(measured["runs"]) == 3
    assert measured["load"]["cores"] >= 1


def test_options_are_checked() -> None:
    assert gpu_script._sizes("1,8, 64") == (1, 8, 64)
    assert gpu_script._precisions("bf16,fp32") == ("bf16", "fp32")
    for bad in ("0", "a", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            gpu_script._sizes(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        gpu_script._precisions("int4")


def test_asking_for_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert gpu_script.main(["--device", "cuda", "--out", str(tmp_path)]) == 1
    assert "sees no CUDA GPU" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_whole_run_on_the_cpu(tmp_path: Path, capsys) -> None:
    argv = ["--device", "cpu", "--batch-sizes", "1", "--seconds", "0.01", "--out", str(tmp_path)]
    assert gpu_script.main(argv) == 0
    [path] = list(tmp_path.glob("*-cpu.json"))
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["machine"]["device"] == "cpu" and record["machine"]["torch"]
    assert record["parity"]["fp32"]["passed"] and record["parity"]["bf16"]["passed"]
    assert set(record["throughput"]) == {"fp32", "bf16"}
    row = record["throughput"]["fp32"]["per_batch"][0]
    assert row["batch_size"] == 1
    assert row["compute"]["images_per_s"] > 0 and row["wall"]["images_per_s"] > 0
    assert len(row["compute"]["spread"]["values"]) == 3
    assert record["dense_matmul_gflops"]["fp32"] > 0
    assert record["summary"]["bf16_fraction_of_dense_rate"] > 0
    loadgen = record["loadgen_bf16"]
    assert "skipped" in loadgen or loadgen["per_batch"][0]["batch_size"] == 1
    out = capsys.readouterr().out
    assert "parity fp32" in out and f"written: {path}" in out
