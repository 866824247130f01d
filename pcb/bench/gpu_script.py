"""One prepared measurement for a bare GPU host: demo export, parity, throughput per batch size.

Meant for a machine with an NVIDIA GPU, PyTorch (CUDA build) and onnxruntime, and nothing
else: no TensorRT, no Docker, no network, only this project copied there. Run from the
project's root (scripts/gpu-measure does this):

    python -m pcb.bench.gpu_script [--out docs/measurements] [--device auto|cuda|cpu] [--quick]

It writes the untrained demo checkpoint, exports it to ONNX (needs the `onnx` package; without
it the parity step is skipped and says so), checks the torch backend's features against
onnxruntime's at each precision, measures the GPU's dense matrix rate (bf16, fp16, fp32) and
then, per precision and batch size, the backend's images/s twice: by GPU compute time (CUDA
events around a batch already on the GPU: what trtexec's GPU Compute Time times) and by wall
time of a batch from host memory to features back in host memory (what the perf stage times).
Each figure is time-bounded and repeated three times, and judged for stability
(pcb.measure.stability); with MLPerf LoadGen installed, LoadGen's Offline and SingleStream runs are
added at bf16. The record lands in `<out>/<date>-<host>-<device>.json` with the host's GPU,
driver, CUDA, cuDNN and library versions. A deadline (default 540 s) keeps the whole run
under 10 minutes: batch sizes not reached are listed as skipped.

On a host without a GPU, `--device cpu` (or auto) runs the same steps on the CPU with small
settings, which is how its code is tested here.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import INPUT_SHAPE
from ..errors import PcbError

DEFAULT_OUT = Path("docs/measurements")
GPU_BATCH_SIZES = (1, 8, 16, 32, 64, 128, 256)
CPU_BATCH_SIZES = (1, 8)
GPU_PRECISIONS = ("bf16", "fp16", "fp32")
CPU_PRECISIONS = ("fp32", "bf16")
REPEATS = 3
DEADLINE_S = 540.0
PARITY_BATCH = 4
# Features of two precisions must agree this well (cosine, per image) to count as the same
# network; fp32 against onnxruntime must be within the export's own 1e-4.
PARITY_COSINE = {"fp32": 0.99999, "bf16": 0.99, "fp16": 0.999}
FP32_MAX_DIFF = 1e-4
TARGET_GPU_FRACTION = 0.30
_BACKEND = {"fp32": "torch", "bf16": "torch-bf16", "fp16": "torch-fp16"}


# ---------------------------------------------------------------- what the host is


def _cpu_name() -> str:
    try:
        from ..infer import cpu_name
    except ImportError:  # the runtime's extras (tabulate, tqdm) need not be on a GPU host
        return platform.processor() or platform.machine()
    return cpu_name()


def host_record(torch: Any, device: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device,
    }
    try:
        import onnxruntime

        record["onnxruntime"] = onnxruntime.__version__
        record["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        record["onnxruntime"] = None
    try:
        import onnx

        record["onnx"] = onnx.__version__
    except ImportError:
        record["onnx"] = None
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(torch.device(device))
        record["gpu"] = {
            "name": properties.name,
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "multiprocessors": properties.multi_processor_count,
            "capability": f"{properties.major}.{properties.minor}",
        }
        # The NVIDIA kernel module says its version here (no nvidia-smi or pynvml needed).
        try:
            first = Path("/proc/driver/nvidia/version").read_text(encoding="utf-8").splitlines()
            record["gpu"]["driver"] = first[0].strip() if first else None
        except OSError:
            record["gpu"]["driver"] = None
    return record


def conv_macs_per_image(model: Any) -> int:
    """Multiply-accumulates of one 384 x 128 image in every Conv2d and Linear the forward
    runs, counted with forward hooks (torch only: the host may lack the onnx package)."""
    import torch
    from torch import nn

    total = 0

    def conv_hook(module: nn.Conv2d, _: Any, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output[0].numel() * (module.in_channels // module.groups) * kernel

    def linear_hook(module: nn.Linear, _: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *INPUT_SHAPE))
    finally:
        for handle in handles:
            handle.remove()
    return total


# ---------------------------------------------------------------- timing


def time_bounded(
    call: Callable[[], float | None], seconds: float, min_calls: int = 3
) -> list[float]:
    """Milliseconds of each call for at least `seconds` and `min_calls` calls.

    `call` returns its own time in ms (CUDA events) or None to be timed here (perf_counter).
    """
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        own = call()
        times.append(own if own is not None else (time.perf_counter() - begin) * 1000.0)
    return times


def repeated_rate(
    call: Callable[[], float | None], batch: int, seconds: float, repeats: int = REPEATS
) -> dict[str, Any]:
    """Images/s of `repeats` time-bounded runs (each: batch x calls / summed time), their
    spread, and the load average around them."""
    from ..measure.stability import repeat

    def one() -> tuple[float, dict[str, float]]:
        times = time_bounded(call, seconds)
        rate = 1000.0 * batch * len(times) / sum(times)
        return rate, {
            "calls": len(times),
            "median_ms": float(np.median(times)),
            "p99_ms": float(np.percentile(times, 99)),
        }

    measured = repeat(one, repeats)
    return {
        "images_per_s": measured.spread.median,
        "spread": measured.spread.to_dict(),
        "load": measured.load.to_dict(),
        "runs": measured.results,
    }


def dense_rates(torch: Any, device: str, size: int, dtypes: Sequence[str]) -> dict[str, float]:
    """The dense matrix-multiply rate (GFLOP/s) of each dtype on `device`, best of 5."""
    from .torch_backend import dense_matmul_rate

    return {dtype: dense_matmul_rate(device, dtype, size=size) for dtype in dtypes}


# ---------------------------------------------------------------- the steps


def export_demo(workdir: Path) -> tuple[Path, Path | None, str]:
    """The untrained demo checkpoint and, where `onnx` is installed, its ONNX export."""
    from ..checkpoint import write_demo_checkpoint

    checkpoint = write_demo_checkpoint(workdir / "PCB_demo.pt", seed=0)
    try:
        import onnx  # noqa: F401  torch's exporter needs it
    except ImportError:
        return checkpoint, None, "onnx is not installed: `pip install onnx` for the parity step"
    from ..checkpoint import load_checkpoint
    from ..export import onnx_bytes

    model = load_checkpoint(checkpoint).model
    onnx_path = workdir / "pcb.onnx"
    onnx_path.write_bytes(onnx_bytes(model.eval()))
    return checkpoint, onnx_path, "exported with the TorchScript exporter, opset 11"


def parity(
    onnx_path: Path | None, engines: dict[str, Any], images: np.ndarray
) -> dict[str, Any]:
    """Each precision's features against onnxruntime's (CPU provider, fp32) on `images`."""
    if onnx_path is None:
        return {"skipped": "no ONNX model (onnx not installed)"}
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = session.run(["output_1"], {"input_1": images})[0]
    flat_ref = reference.reshape(len(images), -1).astype(np.float64)
    results = {}
    for precision, engine in engines.items():
        features = engine.run(images).reshape(len(images), -1).astype(np.float64)
        cosine = (features * flat_ref).sum(1) / (
            np.linalg.norm(features, axis=1) * np.linalg.norm(flat_ref, axis=1)
        )
        diff = float(np.abs(features - flat_ref).max())
        passed = bool(cosine.min() >= PARITY_COSINE[precision])
        if precision == "fp32":
            passed = passed and diff < FP32_MAX_DIFF
        results[precision] = {
            "max_abs_diff": diff,
            "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()),
            "passed": passed,
        }
    return results


def measure_precision(
    engine: Any,
    batch_sizes: Sequence[int],
    seconds: float,
    deadline: float,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Per batch size: images/s by device compute time and by host-to-host wall time."""
    rows, skipped = [], []
    rng = np.random.default_rng(0)
    for size in batch_sizes:
        if time.perf_counter() > deadline:
            skipped.append(size)
            continue
        host = rng.standard_normal((size, *INPUT_SHAPE), dtype=np.float32)
        engine.run(host)  # warm-up; on CUDA this captures the batch size's graph
        engine.device_times_ms(size, iterations=1, warmup=2)  # the device batch, made once

        def on_device(size: int = size) -> float:
            return engine.device_times_ms(size, iterations=1, warmup=0)[0]

        def host_to_host(batch: np.ndarray = host) -> None:
            engine.run(batch)  # timed by time_bounded: copies in and out included

        compute = repeated_rate(on_device, size, seconds)
        wall = repeated_rate(host_to_host, size, seconds)
        rows.append({"batch_size": size, "compute": compute, "wall": wall})
    return rows, skipped


def loadgen_bf16(engine: Any, batch_sizes: Sequence[int], workdir: Path) -> dict[str, Any]:
    """LoadGen's Offline and SingleStream (quick rules) on the engine, where it is installed."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        return {"skipped": "mlperf_loadgen is not installed (`pip install mlcommons-loadgen`)"}
    from ..measure.loadgen_harness import LoadGenRules
    from ..measure.perf_loadgen import MeasureSettings, describe, sweep

    rng = np.random.default_rng(1)
    pool = rng.standard_normal((64, *INPUT_SHAPE), dtype=np.float32)
    settings = MeasureSettings(rules=LoadGenRules.quick(), repeats=REPEATS, warmup=3)
    measured = sweep(engine.run, pool, batch_sizes, settings, workdir / "loadgen")
    return {
        "rules": settings.rules.to_dict(),
        "per_batch": [
            {
                "batch_size": m.batch_size,
                "images_per_s": m.images_per_s,
                "valid": m.valid,
                "described": describe(m),
                "runs": [r.to_dict() for r in m.runs],
            }
            for m in measured
        ],
    }


def _best(rows: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return max(rows, key=lambda r: r[kind]["images_per_s"]) if rows else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise PcbError("this script needs PyTorch: install a CUDA build from pytorch.org") from None
    from ..torch_backend import TorchBackend

    started = time.perf_counter()
    deadline = started + args.deadline
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        raise PcbError(
            f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA GPU; check "
            "`nvidia-smi`, or install a CUDA build of PyTorch"
        )
    precisions = args.precisions or (GPU_PRECISIONS if on_gpu else CPU_PRECISIONS)
    batch_sizes = args.batch_sizes or (GPU_BATCH_SIZES if on_gpu else CPU_BATCH_SIZES)
    seconds = args.seconds if args.seconds else (2.0 if on_gpu else 0.5)
    if args.quick:
        seconds = min(seconds, 0.5)
    record: dict[str, Any] = {
        "kind": "pcb gpu-measure",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m pcb.bench.gpu_script " + " ".join(args.argv),
        "machine": host_record(torch, device),
        "settings": {
            "precisions": list(precisions),
            "batch_sizes": list(batch_sizes),
            "seconds_per_run": seconds,
            "repeats": REPEATS,
            "deadline_s": args.deadline,
        },
    }
    with tempfile.TemporaryDirectory(prefix="pcb-gpu-measure-") as scratch:
        workdir = Path(scratch)
        checkpoint, onnx_path, export_note = export_demo(workdir)
        record["export"] = {"note": export_note, "onnx": onnx_path is not None}
        from ..checkpoint import load_checkpoint

        macs = conv_macs_per_image(load_checkpoint(checkpoint).model)
        record["gflop_per_image"] = 2 * macs / 1e9
        engines = {}
        for precision in precisions:
            if precision == "fp16" and not on_gpu:
                continue
            engine = TorchBackend(device=device, precision=precision, graphs=args.graphs)
            engine.load(checkpoint, None, args.threads)
            engines[precision] = engine
        record["backend"] = {p: e.describe() for p, e in engines.items()}
        rng = np.random.default_rng(2)
        images = rng.standard_normal((PARITY_BATCH, *INPUT_SHAPE), dtype=np.float32)
        record["parity"] = parity(onnx_path, engines, images)
        dtypes = ["bf16", "fp16", "fp32"] if on_gpu else ["fp32", "bf16"]
        record["dense_matmul_gflops"] = dense_rates(
            torch, device, 8192 if on_gpu else 1024, dtypes
        )
        record["throughput"] = {}
        for precision, engine in engines.items():
            rows, skipped = measure_precision(engine, batch_sizes, seconds, deadline)
            record["throughput"][precision] = {"per_batch": rows, "skipped_batch_sizes": skipped}
        if "bf16" in engines and not args.no_loadgen and time.perf_counter() < deadline:
            loadgen_sizes = [b for b in (1, 64) if b in batch_sizes] or list(batch_sizes[:1])
            record["loadgen_bf16"] = loadgen_bf16(engines["bf16"], loadgen_sizes, workdir)
    record["summary"] = summarize(record)
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: best images/s per precision, and bf16's share of the dense rate."""
    gflop = record["gflop_per_image"]
    summary: dict[str, Any] = {}
    for precision, measured in record["throughput"].items():
        best_compute = _best(measured["per_batch"], "compute")
        best_wall = _best(measured["per_batch"], "wall")
        if best_compute is None or best_wall is None:
            continue
        summary[precision] = {
            "best_compute_images_per_s": best_compute["compute"]["images_per_s"],
            "best_compute_batch": best_compute["batch_size"],
            "best_wall_images_per_s": best_wall["wall"]["images_per_s"],
            "best_wall_batch": best_wall["batch_size"],
            "stable": all(
                r[k]["spread"]["stable"] for r in measured["per_batch"] for k in ("compute", "wall")
            ),
        }
    peak = record["dense_matmul_gflops"].get("bf16")
    if "bf16" in summary and peak:
        fraction = summary["bf16"]["best_compute_images_per_s"] * gflop / peak
        summary["bf16_fraction_of_dense_rate"] = fraction
        summary["bf16_target"] = f">= {TARGET_GPU_FRACTION:g}"
        summary["bf16_target_met"] = bool(fraction >= TARGET_GPU_FRACTION)
    return summary


def render(record: dict[str, Any]) -> str:
    lines = [
        f"{record['machine'].get('gpu', {}).get('name', record['machine']['cpu'])} "
        f"({record['machine']['device']}), torch {record['machine']['torch']}, "
        f"{record['gflop_per_image']:.1f} GFLOP per image",
        "dense matmul GFLOP/s: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in record["dense_matmul_gflops"].items()),
    ]
    for precision, result in record["parity"].items():
        if isinstance(result, dict):
            lines.append(
                f"parity {precision}: max|diff| {result['max_abs_diff']:.2e}, cosine min "
                f"{result['cosine_min']:.6f} -> {'ok' if result['passed'] else 'FAILED'}"
            )
        else:
            lines.append(f"parity: {result}")
    lines.append(f"{'precision':>9} {'batch':>5} {'compute img/s':>14} {'wall img/s':>11} stable")
    for precision, measured in record["throughput"].items():
        for row in measured["per_batch"]:
            stable = row["compute"]["spread"]["stable"] and row["wall"]["spread"]["stable"]
            lines.append(
                f"{precision:>9} {row['batch_size']:>5} {row['compute']['images_per_s']:>14.1f} "
                f"{row['wall']['images_per_s']:>11.1f} {'yes' if stable else 'NO'}"
            )
        if measured["skipped_batch_sizes"]:
            lines.append(f"{precision:>9} skipped (deadline): {measured['skipped_batch_sizes']}")
    summary = record["summary"]
    if "bf16_fraction_of_dense_rate" in summary:
        lines.append(
            f"bf16 best / dense bf16 rate: {summary['bf16_fraction_of_dense_rate']:.3f} "
            f"(target {summary['bf16_target']}: "
            f"{'met' if summary['bf16_target_met'] else 'NOT MET'})"
        )
    return "\n".join(lines)


def write_record(record: dict[str, Any], out: Path) -> Path:
    from ..fileio import atomic_write_json

    stamp = record["date"][:10]
    device = "gpu" if record["machine"]["device"].startswith("cuda") else "cpu"
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in record["machine"]["host"])
    path = Path(out) / f"{stamp}-{host}-{device}.json"
    atomic_write_json(path, record)
    return path


def _sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return values


def _precisions(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in _BACKEND]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"precisions are fp32, bf16, fp16; got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m pcb.bench.gpu_script",
        description="Demo export, parity and per-batch throughput of the torch backend on a "
        "GPU host (or the CPU), written to one JSON record.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the record")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--batch-sizes", type=_sizes, default=None)
    parser.add_argument("--precisions", type=_precisions, default=None)
    parser.add_argument("--graphs", default="auto", help="auto, cuda-graphs, compile or none")
    parser.add_argument("--seconds", type=float, default=0.0, help="seconds per timed run")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds in all")
    parser.add_argument("--quick", action="store_true", help="0.5 s per timed run")
    parser.add_argument("--no-loadgen", action="store_true", help="leave LoadGen's runs out")
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        record = run(args)
        path = write_record(record, args.out)
    except PcbError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(render(record))
    print(f"written: {path} ({record['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
