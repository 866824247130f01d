"""The TensorRT part of the pipeline as StageCalls, and what a dry run prints of it.

`TrtPlan` holds the few settings that matter (run, precision, batch sizes, GPUs, ...) and gives
the calls in order: [trt-calibrate (int8),] trt-perf, trt-infer, evaluate, [parity]. Each
TensorRT call runs in the `tensorrt` image with the GPUs chosen; `describe()` lists every
container (its `docker run` line, or the host command with --local) and the trtexec commands
inside, which `trtexec_commands(argv)` derives from a stage's own arguments (so any dry-run
listing can show them). `insert_trt` places the calls into a longer pipeline.

GPU selection (`gpus`): "all" (default), or device ids / UUIDs "0", "0,2", "GPU-3f2a...".
In a container the chosen GPUs are the only ones it sees, numbered from 0, so the stages run
on CUDA device 0 (the first chosen); on the host (--local) they run on the first id given.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from ..constants import DEFAULT_BATCH_SIZES
from ..errors import PcbError
from ..orchestration.spec import GpuSelection, Roots, gpu_request
from ..orchestration.stage import StageCall
from .engine_cache import (
    CALIBRATION_BATCH,
    CALIBRATION_IMAGES,
)
from .image_matrix import DEFAULT_KEY, tensorrt_image
from .names import dump_backend
from .trtexec import validate_precision

IMAGE = "tensorrt"
REFERENCE = "onnxruntime"
EXECUTORS = ("docker", "local")
GpusValue = Union[str, int, Sequence[Union[str, int]], None]


def parse_gpus(value: GpusValue) -> GpuSelection:
    """ "all" (or None, "") -> -1 (every GPU); "0,2" / 1 / ["0", "GPU-..."] -> those ids.

    A bare number is a device id, not a count: `--gpus 1` means GPU 1, as one says it.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return -1
    if isinstance(value, bool):
        raise PcbError(f"gpus = {value!r}: give all, or device ids such as 0 or 0,1")
    if isinstance(value, int):
        if value == -1:
            return -1
        if value < 0:
            raise PcbError(f"gpus = {value}: give all, or non-negative device ids such as 0,1")
        return (str(value),)
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    ids = tuple(part.strip() for part in parts if str(part).strip())
    if not ids:
        raise PcbError("gpus is empty: give all, or device ids such as 0 or 0,1")
    if any(i.lower() == "none" for i in ids):
        raise PcbError("gpus = none: the TensorRT stages need a GPU; give all or device ids")
    bad = [i for i in ids if not (i.isdigit() or i.startswith(("GPU-", "MIG-")))]
    if bad:
        raise PcbError(
            f"gpus: {', '.join(bad)} is neither a device index nor a GPU-/MIG- UUID "
            "(`nvidia-smi -L` lists both)"
        )
    return ids


def cuda_device(gpus: GpuSelection, executor: str) -> int:
    """The CUDA device a stage uses: 0 in a container (it sees only the chosen GPUs); on the
    host the first chosen index (a UUID cannot be an index there: 0, with CUDA_VISIBLE_DEVICES
    left to the user)."""
    if executor == "docker" or gpus is None or isinstance(gpus, int):
        return 0
    first = gpus[0]
    return int(first) if first.isdigit() else 0


def gpus_label(gpus: GpuSelection) -> str:
    request = gpu_request(gpus)
    return "none" if request is None else request.to_cli().strip('"')


def _join(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


@dataclass(frozen=True)
class TrtPlan:
    """The TensorRT stages of one run."""

    run: Path
    dataset: Path
    precision: str = "fp16"
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    infer_batch_size: int = 16
    gpus: GpusValue = "all"
    executor: str = "docker"
    calib_images: int = CALIBRATION_IMAGES
    calib_batch_size: int = CALIBRATION_BATCH
    accuracy: bool = True  # trt-infer + evaluate after trt-perf
    # parity against onnxruntime's dumps and evaluation (which must exist by then)
    parity: bool = True
    parity_threshold: float = 0.99
    duration_s: int | None = None  # trtexec --duration; None: its default (3 s)
    strict: bool = False  # a failed qps cross-check stops the run
    quiet: bool = False
    trt_image: str = DEFAULT_KEY  # the tensorrt image's base (image_matrix), for the dry run

    def __post_init__(self) -> None:
        validate_precision(self.precision)
        tensorrt_image(self.trt_image)
        if self.executor not in EXECUTORS:
            raise PcbError(f"executor {self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        if not self.batch_sizes or any(b <= 0 for b in self.batch_sizes):
            raise PcbError(f"TensorRT batch sizes must be positive, got {self.batch_sizes}")
        parse_gpus(self.gpus)

    @property
    def selection(self) -> GpuSelection:
        return parse_gpus(self.gpus)

    @property
    def device(self) -> int:
        return cuda_device(self.selection, self.executor)

    def _tail(self) -> tuple[str, ...]:
        return ("--quiet",) if self.quiet else ()

    def _gpu_call(self, stage: str, args: tuple) -> StageCall:
        return StageCall(stage, IMAGE, args, gpus=self.selection)

    def calls(self) -> list[StageCall]:
        run, precision, device = self.run, self.precision, str(self.device)
        calls = []
        if precision == "int8":
            calls.append(
                self._gpu_call(
                    "trt-calibrate",
                    (
                        "--run",
                        run,
                        "--images",
                        str(self.calib_images),
                        "--batch-size",
                        str(self.calib_batch_size),
                        "--device",
                        device,
                        *self._tail(),
                    ),
                )
            )
        perf: tuple = ("--run", run, "--precision", precision, "--device", device)
        perf += ("--batch-sizes", _join(self.batch_sizes))
        if self.duration_s is not None:
            perf += ("--duration", str(self.duration_s))
        if self.strict:
            perf += ("--strict",)
        calls.append(self._gpu_call("trt-perf", (*perf, *self._tail())))
        if self.accuracy:
            calls.append(
                self._gpu_call(
                    "trt-infer",
                    (
                        "--run",
                        run,
                        "--precision",
                        precision,
                        "--device",
                        device,
                        "--batch-size",
                        str(self.infer_batch_size),
                        *self._tail(),
                    ),
                )
            )
            calls.append(
                StageCall(
                    "evaluate",
                    "runtime",
                    ("--dataset", self.dataset, "--run", run, "--backend", dump_backend(precision)),
                )
            )
            if self.parity:
                calls.append(
                    StageCall(
                        "parity",
                        "runtime",
                        (
                            "--run",
                            run,
                            "--backend",
                            dump_backend(precision),
                            "--reference",
                            REFERENCE,
                            "--threshold",
                            f"{self.parity_threshold:g}",
                        ),
                    )
                )
        return calls

    # ---- dry run -----------------------------------------------------------------------------

    def describe(
        self, data_dir: Path | str = "data", results_dir: Path | str = "results"
    ) -> list[str]:
        """Every container (or host command) of the plan, with the trtexec lines inside."""
        from ..cli.preview import trtexec_commands
        from ..orchestration.docker_executor import container_spec

        roots = Roots.of(data_dir, results_dir)
        lines = []
        for call in self.calls():
            gpus = f", GPUs {gpus_label(call.gpus)}" if call.gpus is not None else ""
            lines.append(f"==> {call.stage} [pcb-{call.image}{gpus}]")
            if self.executor == "docker":
                spec = container_spec(
                    call, data_dir=roots.data, results_dir=roots.results, require_npu=False
                )
                lines.append("  " + spec.to_docker_run())
                inner: Sequence[str] = spec.command
            else:
                inner = call.argv()
                lines.append("  " + shlex.join(["python", "-m", "pcb", *inner]))
            lines += [
                f"    $ {command}" for command in trtexec_commands(inner, image=self.trt_image)
            ]
        return lines


def reference_ready(run: Path) -> bool:
    """onnxruntime's evaluation of this run exists, so parity has something to compare with."""
    return (Path(run) / "eval" / f"{REFERENCE}.json").is_file()


def insert_trt(calls: Sequence[StageCall], trt_calls: Sequence[StageCall]) -> list[StageCall]:
    """A pipeline with the TensorRT calls in it: the GPU stages and their evaluation right after
    preprocess (a GPU problem shows before hours of CPU work), parity just before the report
    (after onnxruntime's reference evaluation), the report last."""
    calls, head, tail = list(calls), [], []
    for call in trt_calls:
        (tail if call.stage == "parity" else head).append(call)
    stages = [call.stage for call in calls]
    after = stages.index("preprocess") + 1 if "preprocess" in stages else 0
    merged = [*calls[:after], *head, *calls[after:]]
    stages = [call.stage for call in merged]
    at = len(merged) - stages[::-1].index("report") - 1 if "report" in stages else len(merged)
    return [*merged[:at], *tail, *merged[at:]]


def check_gpu_host(calls: Sequence[StageCall], executor: str, client: Any = None) -> None:
    """Before the first stage of a pipeline with GPU stages: the Docker engine has the NVIDIA
    runtime (docker executor), or trtexec is on this host's PATH (local). The executor checks
    again per stage; this check stops a run before images are built and CPU stages run."""
    gpu_calls = [call for call in calls if call.gpus is not None]
    if not gpu_calls:
        return
    if executor == "local":
        from .tools import resolve_trtexec

        resolve_trtexec()
        return
    from ..orchestration.docker_executor import connect, gpu_runtime_available

    if not gpu_runtime_available(client or connect()):
        raise PcbError(
            f"stage {gpu_calls[0].stage} (pcb-{gpu_calls[0].image}) needs an NVIDIA GPU, and the "
            "Docker engine has no NVIDIA runtime: install the NVIDIA driver (`nvidia-smi` lists "
            "the GPUs) and the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure "
            "--runtime=docker && sudo systemctl restart docker` (`docker run --rm --gpus all "
            "ubuntu nvidia-smi` should then work). To see what would run, add --dry-run."
        )
