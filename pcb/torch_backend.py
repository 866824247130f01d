"""PyTorch as a backend: CPU fp32 / bf16, CUDA fp32 / fp16 / bf16, channels-last, CUDA graphs.

The GPU column for hosts without TensorRT, and the baseline TensorRT must beat where it is
there. The network is `pcb.model.PCB` filled from the run's checkpoint, found through
`model/export.json` beside the ONNX model the stages pass (and checked by md5, so the torch
figures are of the same weights as the exported model's), or given as a .pt directly.

What it does to run fast, each a choice recorded in `describe()`:

- BatchNorm folded into the convolution before it (inference only; what the ONNX export and
  TensorRT do too), so eager mode runs 53 convolutions instead of 53 convolutions and 53
  normalisations.
- channels-last memory layout (NHWC), the layout cuDNN's tensor-core kernels and oneDNN's
  blocked kernels want.
- fp32 on CUDA with TF32 off (PyTorch lets cuDNN use TF32 by default), so it is fp32.
- fp16 / bf16: the network's weights cast once; the six stripes are pooled in that precision
  and normalised in fp32, so the features are unit vectors to fp32 rounding.
- On CUDA, one CUDA graph per batch size, captured on the first batch of that size (a
  static input buffer, replayed): the 160-odd kernel launches of a batch cost one launch.
  `graphs="compile"` uses torch.compile (mode max-autotune) instead; `"none"` stays eager.

It sits in the library layer, not in backends/: unlike the other backends it runs the
project's own network code (pcb.model, pcb.checkpoint), which is above backends/ in the
layers (tests/test_layers.py). The registry names it by string like any other backend.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Backend, resolve_threads
from .constants import FEATURE_SHAPE, INPUT_SHAPE
from .errors import PcbError

PRECISIONS = ("fp32", "bf16", "fp16")
GRAPH_MODES = ("auto", "cuda-graphs", "compile", "none")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar")


def _torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise PcbError(
            f"the torch backend needs PyTorch ({error}): `pip install torch==2.13.0` (CPU) or "
            "a CUDA build from pytorch.org"
        ) from None
    return torch


def checkpoint_for(model_path: Path) -> Path:
    """The checkpoint a torch backend loads for `model_path` (a .pt, or pcb.onnx of a run)."""
    model_path = Path(model_path)
    if model_path.suffix.lower() in _CHECKPOINT_SUFFIXES:
        if not model_path.is_file():
            raise PcbError(f"checkpoint not found: {model_path}")
        return model_path
    from .fileio import read_json
    from .record.digest import cached_md5

    record_path = model_path.parent / "export.json"
    try:
        record = read_json(record_path)
        checkpoint = Path(record["checkpoint"])
        recorded_md5 = record["checkpoint_md5"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PcbError(
            f"the torch backend runs the checkpoint {model_path} was exported from, and "
            f"{record_path} does not name it: run `pcb export` for this run, or give the "
            "checkpoint (.pt) itself"
        ) from None
    if not checkpoint.is_file():
        raise PcbError(
            f"checkpoint {checkpoint} named by {record_path} is not there (a run folder moved "
            "from another host, or a container path): give the checkpoint (.pt) itself"
        )
    found = cached_md5(checkpoint, model_path.parent.parent)
    if found != recorded_md5:
        raise PcbError(
            f"checkpoint {checkpoint} has md5 {found}, but {model_path} was exported from "
            f"md5 {recorded_md5}: run `pcb export` again so both are of the same weights"
        )
    return checkpoint


def fold_batchnorm(model: Any) -> Any:
    """A copy of `model` (eval) with every BatchNorm folded into the Conv2d before it.

    A BatchNorm2d declared right after a bias-free Conv2d in the same module is the one that
    normalises its output in PCB (pcb.model: conv1/bn1, convN/bnN in each Bottleneck,
    downsample.0/.1, and local_conv/feat_bn2d of the training head), so each such pair
    becomes one convolution with a bias and the BatchNorm an identity. The test compares the
    folded model's features with the original's.
    """
    torch = _torch()
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()

    def fold(parent: nn.Module) -> None:
        children = list(parent.named_children())
        for (name, child), (next_name, after) in zip(children, children[1:]):
            if (
                isinstance(child, nn.Conv2d)
                and child.bias is None
                and isinstance(after, nn.BatchNorm2d)
                and after.num_features == child.out_channels
            ):
                setattr(parent, name, fuse_conv_bn_eval(child, after))
                setattr(parent, next_name, nn.Identity())
        for _, child in parent.named_children():
            fold(child)

    with torch.no_grad():
        fold(folded)
    return folded


class TorchBackend(Backend):
    """PCB in PyTorch. `device` "auto" is the first CUDA GPU where there is one, else CPU."""

    name = "torch"
    precision = "fp32"

    def __init__(
        self,
        device: str = "auto",
        precision: str | None = None,
        graphs: str = "auto",
        channels_last: bool = True,
        fold_bn: bool = True,
    ) -> None:
        if precision is not None:
            self.precision = precision
        if self.precision not in PRECISIONS:
            raise PcbError(f"unknown precision {self.precision!r}: use one of {PRECISIONS}")
        if graphs not in GRAPH_MODES:
            raise PcbError(f"unknown graph mode {graphs!r}: use one of {', '.join(GRAPH_MODES)}")
        self.requested_device = device
        self.graphs = graphs
        self.channels_last = channels_last
        self.fold_bn = fold_bn
        self.threads = 0
        self._model: Any = None
        self._device: Any = None
        self._dtype: Any = None
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}
        self._compiled: Any = None
        self._pinned: dict[int, Any] = {}
        self._device_inputs: dict[int, Any] = {}
        self.checkpoint: Path | None = None

    # ------------------------------------------------------------------ what it is

    def version(self) -> str:
        # CUDA builds say so themselves (2.13.0+cu126), CPU builds too (2.13.0+cpu).
        return str(_torch().__version__)

    @property
    def on_cuda(self) -> bool:
        # Before load too: the perf stage names the platform before it loads the model.
        device = self._device if self._device is not None else self._pick_device()
        return device.type == "cuda"

    def platform_name(self) -> str:
        return f"{'gpu' if self.on_cuda else 'cpu'}-torch-{self.precision}"

    @property
    def scope(self) -> str:
        return "gpu" if self.on_cuda else "process"

    def device_name(self) -> str:
        if self.on_cuda:
            return str(_torch().cuda.get_device_name(self._device))
        try:
            from .infer import cpu_name
        except ImportError:  # a bare GPU host without the runtime's extras (tabulate, tqdm)
            import platform

            return platform.processor() or platform.machine() or "CPU"
        return cpu_name()

    def graph_mode(self) -> str:
        if self.graphs != "auto":
            return self.graphs
        return "cuda-graphs" if self.on_cuda else "none"

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self._device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "batchnorm_folded": self.fold_bn,
            "graphs": self.graph_mode(),
            "threads": self.threads,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
        }

    def model_file(self, model_path: Path) -> Path:
        return checkpoint_for(model_path)

    # ------------------------------------------------------------------ loading

    def _pick_device(self) -> Any:
        torch = _torch()
        wanted = self.requested_device
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(wanted)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise PcbError(
                "the torch backend was asked for CUDA, but this PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}): use "
                "device cpu, or install a CUDA build of PyTorch and the NVIDIA driver"
            )
        if device.type not in ("cpu", "cuda"):
            raise PcbError(f"unsupported torch device {wanted!r}: use auto, cpu or cuda[:N]")
        return device

    def load(self, model_path: Path, batch_size: int | None = None, threads: int = 0) -> None:
        torch = _torch()
        from .checkpoint import load_checkpoint

        self._device = self._pick_device()
        if self.precision == "fp16" and not self.on_cuda:
            raise PcbError(
                "torch fp16 runs on a CUDA GPU only (CPU kernels are slow or missing): use "
                "torch-bf16 or torch on the CPU"
            )
        self.threads = resolve_threads(threads)
        if not self.on_cuda:
            torch.set_num_threads(self.threads)
        elif self.precision == "fp32":
            # PyTorch lets cuDNN convolutions use TF32 by default (10-bit mantissa inputs):
            # fp32 here means fp32, as onnxruntime and trtexec --fp32 compute it.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.checkpoint = self.model_file(model_path)
        model = load_checkpoint(self.checkpoint).model.eval()
        if self.fold_bn:
            model = fold_batchnorm(model)
        self._dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            self.precision
        ]
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self._model = model.to(device=self._device, dtype=self._dtype, memory_format=memory)
        self._graphs.clear()
        self._pinned.clear()
        self._device_inputs.clear()
        self._compiled = None
        if self.graph_mode() == "compile":
            self._compiled = torch.compile(self._forward, mode="max-autotune", dynamic=False)
        elif self.graph_mode() == "cuda-graphs" and not self.on_cuda:
            raise PcbError("CUDA graphs need a CUDA device: use graphs none on the CPU")

    # ------------------------------------------------------------------ running

    def _forward(self, images: Any) -> Any:
        """N x 3 x 384 x 128 on the device (model dtype) -> unit features N x 2048 x 6 x 1."""
        pooled = self._model.stripes(images).float()
        return pooled / pooled.norm(p=2, dim=1, keepdim=True)

    def _to_device(self, batch: np.ndarray) -> Any:
        torch = _torch()
        host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.on_cuda:
            # A pinned staging buffer per batch size: the copy to the GPU is then a DMA that
            # need not wait for pageable memory to be staged by the driver.
            staging = self._pinned.get(len(batch))
            if staging is None:
                staging = torch.empty(host.shape, dtype=torch.float32).pin_memory()
                self._pinned[len(batch)] = staging
            staging.copy_(host)
            host = staging
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        return host.to(self._device, non_blocking=True).to(dtype=self._dtype, memory_format=memory)

    def _graph_for(self, example: Any) -> tuple[Any, Any, Any]:
        """The CUDA graph of one batch size, captured on first use (warm-up on a side stream,
        as PyTorch's CUDA-graph notes require, so lazy initialisation is not captured)."""
        torch = _torch()
        size = int(example.shape[0])
        if size in self._graphs:
            return self._graphs[size]
        static_in = example.clone()
        stream = torch.cuda.Stream(self._device)
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                self._forward(static_in)
        torch.cuda.current_stream(self._device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = self._forward(static_in)
        self._graphs[size] = (graph, static_in, static_out)
        return self._graphs[size]

    def run_on_device(self, images: Any) -> Any:
        """The features of a batch already on the device, left on the device."""
        torch = _torch()
        if self._model is None:
            raise PcbError("torch backend used before load(): call load(model_path) first")
        mode = self.graph_mode()
        if mode == "cuda-graphs":
            graph, static_in, static_out = self._graph_for(images)
            static_in.copy_(images)
            graph.replay()
            return static_out
        with torch.inference_mode():
            if mode == "compile":
                return self._compiled(images)
            return self._forward(images)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise PcbError("torch backend used before load(): call load(model_path) first")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != INPUT_SHAPE:
            raise PcbError(
                f"batch has shape {tuple(batch.shape)}, expected N x 3 x 384 x 128 float32"
            )
        features = self.run_on_device(self._to_device(batch))
        result = features.to("cpu").numpy()  # waits for the GPU: the copy is synchronous
        if result.shape != (batch.shape[0], *FEATURE_SHAPE):
            raise PcbError(f"torch model returned {result.shape}, expected N x 2048 x 6 x 1")
        return result

    def device_batch(self, batch_size: int) -> Any:
        """A seeded random batch of `batch_size` already on the device, made once per size."""
        torch = _torch()
        if batch_size not in self._device_inputs:
            memory = torch.channels_last if self.channels_last else torch.contiguous_format
            generator = torch.Generator(device="cpu").manual_seed(0)
            images = torch.randn((batch_size, *INPUT_SHAPE), generator=generator)
            self._device_inputs[batch_size] = images.to(self._device).to(
                dtype=self._dtype, memory_format=memory
            )
        return self._device_inputs[batch_size]

    def device_times_ms(self, batch_size: int, iterations: int, warmup: int = 3) -> list[float]:
        """Compute time of `iterations` batches already on the device, one sample each.

        On CUDA, CUDA events around each batch on the GPU's own clock, no host copies: the
        same thing trtexec's GPU Compute Time times. On the CPU, time.perf_counter.
        """
        import time

        torch = _torch()
        images = self.device_batch(batch_size)
        for _ in range(warmup):
            self.run_on_device(images)
        times: list[float] = []
        if self.on_cuda:
            stream = torch.cuda.current_stream(self._device)
            for _ in range(iterations):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record(stream)
                self.run_on_device(images)
                end.record(stream)
                end.synchronize()
                times.append(float(start.elapsed_time(end)))
            return times
        for _ in range(iterations):
            begin = time.perf_counter()
            self.run_on_device(images)
            times.append((time.perf_counter() - begin) * 1000.0)
        return times


class TorchBf16Backend(TorchBackend):
    name = "torch-bf16"
    precision = "bf16"


class TorchFp16Backend(TorchBackend):
    name = "torch-fp16"
    precision = "fp16"
