"""The torch backend beside onnxruntime: parity, and speed against the machine's matrix rate.

Parity: the same demo images through onnxruntime fp32 and torch fp32 (max |diff| below the
export's own 1e-4) and torch bf16 (mean cosine). Speed: images/s of each at the bench's batch
sizes, side by side; on a CUDA GPU, the best batch's achieved FLOP rate over the GPU's dense
bf16 matrix rate measured in the same run (the issue's goal: 30 % or more). Without a GPU the
GPU figure has no value and says so; scripts/gpu-measure measures it on a GPU host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import create_backend
from ..backends.base import resolve_threads
from ..constants import INPUT_SHAPE
from .common import BenchConfig, BenchResult, Figure, interleaved_rates, ratio_figure
from .workspace import DemoRun

TARGET_GPU_FRACTION = 0.30
PARITY_TOLERANCE = 1e-4
TARGET_BF16_COSINE = 0.99


def dense_matmul_rate(device: str, dtype: str, size: int = 8192, repeats: int = 5) -> float:
    """Best GFLOP/s of a size x size matrix product in `dtype` on `device` (torch)."""
    import time

    import torch

    kind = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    a = torch.randn(size, size, device=device).to(kind)
    b = torch.randn(size, size, device=device).to(kind)
    best = 0.0
    with torch.inference_mode():
        a @ b  # warm-up: library selection, allocations
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def bench_torch(config: BenchConfig, run: DemoRun) -> BenchResult:
    import torch

    from .cpu_inference import macs_per_image

    threads = resolve_threads(config.threads)
    gflop = 2 * sum(macs_per_image(run.layout.onnx_path).values()) / 1e9
    engines: dict[str, Any] = {}
    for name in ("onnxruntime", "torch", "torch-bf16"):
        engines[name] = create_backend(name)
        engines[name].load(run.layout.onnx_path, None, threads)
    bins = sorted(run.layout.bins_dir("query").glob("*.bin"))[:16]
    images = np.stack([np.fromfile(p, dtype=np.float32).reshape(INPUT_SHAPE) for p in bins])
    features = {name: engine.run(images) for name, engine in engines.items()}
    fp32_diff = float(np.abs(features["torch"] - features["onnxruntime"]).max())
    bf16_cos = _cosine(features["torch-bf16"], features["onnxruntime"])

    rng = np.random.default_rng(0)
    rows = []
    for size in config.batch_sizes:
        batch = images[rng.integers(0, len(images), size)]
        rates = interleaved_rates(
            {name: (lambda e=engine, b=batch: e.run(b)) for name, engine in engines.items()},
            size,
            config.min_seconds,
            config.min_iterations,
        )
        rows.append({"batch_size": size, **{n: r["mean"] for n, r in rates.items()}})
    best = {name: max(r[name] for r in rows) for name in engines}
    on_cuda = torch.cuda.is_available()
    gpu_fraction = None
    gpu_note = "no CUDA GPU on this host: scripts/gpu-measure measures it on one"
    details: dict[str, Any] = {"threads": threads, "per_batch": rows, "gflop_per_image": gflop}
    if on_cuda:
        gpu = create_backend("torch-bf16")
        gpu.load(run.layout.onnx_path, None, threads)
        peak = dense_matmul_rate("cuda", "bf16")
        gpu_rates = {}
        for size in config.gpu_batch_sizes:
            times = gpu.device_times_ms(size, iterations=20)
            gpu_rates[size] = 1000.0 * size / float(np.median(times))
        best_batch = max(gpu_rates, key=gpu_rates.__getitem__)
        gpu_fraction = gpu_rates[best_batch] * gflop / peak
        gpu_note = (
            f"{gpu.device_name()}, bf16 batch {best_batch}: {gpu_rates[best_batch]:.0f} img/s "
            f"(GPU compute time) vs dense bf16 {peak / 1000:.0f} TFLOP/s"
        )
        details.update(gpu_images_per_s=gpu_rates, gpu_bf16_matmul_gflops=peak)
    result = BenchResult("torch")
    result.figures = [
        Figure(
            "torch fp32 vs onnxruntime, max |diff|",
            fp32_diff,
            "",
            f"< {PARITY_TOLERANCE:g}",
            bool(fp32_diff < PARITY_TOLERANCE),
            note=f"{len(images)} demo images",
        ),
        ratio_figure(
            "torch bf16 vs onnxruntime, mean cosine",
            float(bf16_cos.mean()),
            TARGET_BF16_COSINE,
            "",
            note=f"min {bf16_cos.min():.4f}",
        ),
        *[
            Figure(
                f"{name} images/s at its best batch",
                best[name],
                "img/s",
                note=f"{threads} threads, CPU",
            )
            for name in engines
        ],
        Figure(
            "GPU: torch bf16 at its best batch / dense bf16 matmul rate",
            gpu_fraction,
            "",
            f">= {TARGET_GPU_FRACTION:g}",
            None if gpu_fraction is None else bool(gpu_fraction >= TARGET_GPU_FRACTION),
            note=gpu_note,
        ),
    ]
    result.details = details
    return result
