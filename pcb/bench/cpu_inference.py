"""CPU inference: onnxruntime fp32 against PyTorch eager, and against the machine's matmul rate.

The work per image is counted from the model (2 x multiply-accumulates of every Conv / Gemm /
MatMul in the ONNX graph at batch 1), so achieved GFLOP/s = images/s x FLOPs per image. The
machine's fp32 rate is the best single-precision matrix product of numpy (OpenBLAS) and
PyTorch (MKL) at a large size with the same threads, measured in the same run, in a child
process with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (they pin an older kernel on some
hosts; see the workplace's env notes) so the BLAS picks its own kernel, which is recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import resolve_threads
from ..constants import INPUT_SHAPE
from ..errors import PcbError
from .common import (
    BenchConfig,
    BenchResult,
    Figure,
    interleaved_rates,
    per_batch_ratios,
    ratio_figure,
)
from .workspace import DemoRun

TARGET_OF_PEAK = 0.9
# Unset together for the matmul measurement only (never in tests or CI): see the docstring.
_PINNED_BLAS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _shape_of(value_info: Any) -> list[int]:
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def macs_per_image(onnx_path: Path) -> dict[str, int]:
    """Multiply-accumulates of one image, per op type, from the graph's shapes at batch 1."""
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    for tensor in list(graph.input) + list(graph.output):
        dims = tensor.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1  # the dynamic batch axis, fixed so every shape is known
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: _shape_of(v) for v in inferred.graph.value_info}
    shapes.update({v.name: _shape_of(v) for v in inferred.graph.output})
    shapes.update({v.name: _shape_of(v) for v in inferred.graph.input})
    weights = {t.name: list(t.dims) for t in graph.initializer}
    totals: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Conv":
            out = shapes.get(node.output[0])
            weight = weights.get(node.input[1]) or shapes.get(node.input[1])
            if not out or not weight or 0 in out:
                raise PcbError(
                    f"cannot count the work of {node.name}: unknown shapes; re-export the model "
                    "with `python -m pcb export`"
                )
            # Each output element takes (C_in / groups) x kernel area multiply-accumulates.
            count = int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            out = shapes.get(node.output[0])
            left = shapes.get(node.input[0])
            if not out or not left:
                raise PcbError(f"cannot count the work of {node.name}: unknown shapes")
            transposed = node.op_type == "Gemm" and any(
                a.name == "transA" and a.i for a in node.attribute
            )
            inner = left[-2] if transposed else left[-1]
            count = int(np.prod(out)) * inner
        else:
            continue
        totals[node.op_type] = totals.get(node.op_type, 0) + count
    return totals


_MATMUL_CHILD = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
threads, sizes, repeats = int(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
out = {"numpy": {}, "torch": {}}
def best(f, n):
    f()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter(); f(); rates.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return max(rates)
with threadpool_limits(threads):
    for n in sizes:
        a = np.random.default_rng(0).random((n, n), dtype=np.float32); b = a.T.copy()
        out["numpy"][str(n)] = best(lambda: a @ b, n)
    out["blas"] = [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for i in threadpool_info() if i.get("user_api") == "blas"
    ]
try:
    import torch
    torch.set_num_threads(threads)
    for n in sizes:
        a = torch.rand(n, n); b = torch.rand(n, n)
        with torch.inference_mode():
            out["torch"][str(n)] = best(lambda: a @ b, n)
    out["torch_blas"] = "mkl" if torch.backends.mkl.is_available() else "other"
except ImportError:
    pass
print(json.dumps(out))
"""


def matmul_rate(threads: int, sizes: tuple[int, ...], repeats: int = 3) -> dict[str, Any]:
    """Best fp32 GFLOP/s of numpy and torch matrix products, measured in a clean child."""
    env = {k: v for k, v in os.environ.items() if k not in _PINNED_BLAS}
    argv = [str(threads), json.dumps(list(sizes)), str(repeats)]
    done = subprocess.run(
        [sys.executable, "-c", _MATMUL_CHILD, *argv],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise PcbError(f"the matrix-multiply measurement failed: {done.stderr[-1000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rates = [v for lib in ("numpy", "torch") for v in result.get(lib, {}).values()]
    result["best_gflops"] = max(rates)
    return result


def bench_cpu_inference(config: BenchConfig, run: DemoRun) -> BenchResult:
    import torch

    from ..backends import create_backend
    from ..checkpoint import load_checkpoint

    threads = resolve_threads(config.threads)
    onnx_path = run.layout.onnx_path
    macs = macs_per_image(onnx_path)
    flops = 2 * sum(macs.values())
    gflop = flops / 1e9

    peak_before = matmul_rate(threads, config.matmul_sizes)
    engine = create_backend("onnxruntime")
    engine.load(onnx_path, None, threads)
    torch.set_num_threads(threads)
    model = load_checkpoint(run.checkpoint).model.eval()

    def torch_run(tensor: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # eager, without autograd bookkeeping
            return model(tensor)

    rng = np.random.default_rng(0)
    rows = []
    for size in config.batch_sizes:
        batch = rng.standard_normal((size, *INPUT_SHAPE), dtype=np.float32)
        tensor = torch.from_numpy(batch)
        rates = interleaved_rates(
            {
                "onnxruntime": lambda b=batch: engine.run(b),
                "torch": lambda t=tensor: torch_run(t),
            },
            size,
            config.min_seconds,
            config.min_iterations,
        )
        ort_rate, torch_rate = rates["onnxruntime"], rates["torch"]
        rows.append(
            {
                "batch_size": size,
                "onnxruntime_images_per_s": ort_rate["mean"],
                "onnxruntime_best_images_per_s": ort_rate["best"],
                "torch_images_per_s": torch_rate["mean"],
                "torch_best_images_per_s": torch_rate["best"],
                "onnxruntime_rounds": ort_rate["rounds"],
                "torch_rounds": torch_rate["rounds"],
                "onnxruntime_gflops": ort_rate["mean"] * gflop,
            }
        )
    peak_after = matmul_rate(threads, config.matmul_sizes)
    peak = max(peak_before["best_gflops"], peak_after["best_gflops"])
    best = max(rows, key=lambda r: r["onnxruntime_best_images_per_s"])
    best_torch = max(r["torch_images_per_s"] for r in rows)
    # Best single call against the best matmul of a few: like for like, and other processes
    # on a shared machine can only make either slower, never faster.
    achieved = best["onnxruntime_best_images_per_s"] * gflop

    result = BenchResult("cpu_inference")
    result.figures = [
        Figure("FLOPs per image (from the ONNX graph)", gflop, "GFLOP"),
        Figure("fp32 matmul rate (best of numpy, torch)", peak, "GFLOP/s"),
        *per_batch_ratios(rows, "onnxruntime", "torch", "onnxruntime / torch eager"),
        Figure(
            "onnxruntime images/s at its best batch",
            best["onnxruntime_images_per_s"],
            "img/s",
            note=f"batch {best['batch_size']}, mean over calls",
        ),
        Figure("torch eager images/s at its best batch", best_torch, "img/s"),
        Figure("onnxruntime achieved", achieved, "GFLOP/s", note="best call"),
        ratio_figure(
            "onnxruntime achieved / matmul rate",
            achieved / peak,
            TARGET_OF_PEAK,
            "",
            note=f"batch {best['batch_size']}, {threads} threads",
        ),
    ]
    result.details = {
        "threads": threads,
        "macs_per_image": macs,
        "flops_per_image": flops,
        "matmul": {"before": peak_before, "after": peak_after},
        "per_batch": rows,
        "onnxruntime_session": "ORT_ENABLE_ALL (includes NCHWc layout), intra-op threads",
    }
    return result
