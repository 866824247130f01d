"""trtexec command lines: build an engine from the dynamic-batch ONNX, or time a saved one.

Pure: every function returns an argv list and touches nothing, so each option is tested
without TensorRT. The guide's own command (section 7.3) was
`trtexec --onnx=PCB.onnx --shapes=input_1:64x3x384x128 --threads --fp16`; here the shapes
become an optimisation profile (--minShapes/--optShapes/--maxShapes) so that the saved engine
also runs the last, smaller batch of a split when the accuracy stage reuses it. The flags that
differ between TensorRT versions come from flags.py, for the version trtexec reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import INPUT_CHANNELS, INPUT_HEIGHT, INPUT_NAME, INPUT_WIDTH
from ..errors import PcbError, did_you_mean
from .flags import build_only_flag, has_separate_profile_run, workspace_flag
from .versions import TensorRTVersion

PRECISIONS = ("fp16", "fp32", "int8")
DEFAULT_PRECISION = "fp16"
TRTEXEC = "trtexec"


def validate_precision(value: str) -> str:
    """fp16 (the guide's), fp32 or int8; anything else is a PcbError naming the choices."""
    text = str(value).strip().lower()
    if text not in PRECISIONS:
        raise PcbError(
            f"TensorRT precision {value!r}{did_you_mean(text, PRECISIONS)} is not one of "
            f"{', '.join(PRECISIONS)}: "
            "use fp16 (the guide's), fp32, or int8 (needs a calibration cache: trt-calibrate)"
        )
    return text


def shape(batch: int) -> str:
    """`input_1:<N>x3x384x128`, trtexec's shape syntax for PCB's one input."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise PcbError(f"batch size must be a positive integer, got {batch!r}")
    return f"{INPUT_NAME}:{batch}x{INPUT_CHANNELS}x{INPUT_HEIGHT}x{INPUT_WIDTH}"


def precision_flags(precision: str, calib_cache: Path | None = None) -> list[str]:
    """fp32: none (TensorRT's default); fp16: --fp16; int8: --int8 --calib=<cache>.

    int8 without a cache would make trtexec quantise with made-up scales (it has no
    calibrator of its own), so every accuracy figure would be meaningless: refuse it.
    """
    precision = validate_precision(precision)
    if precision == "fp32":
        return []
    if precision == "fp16":
        return ["--fp16"]
    if calib_cache is None:
        raise PcbError(
            "int8 needs a calibration cache: run `python -m pcb trt-calibrate --run <run>` "
            "(it writes engines/tensorrt/int8/calibration.cache from the preprocessed bins)"
        )
    # int8 alone, as trtexec means it: layers without an int8 kernel run in fp32.
    return ["--int8", f"--calib={calib_cache}"]


@dataclass(frozen=True)
class TimingOptions:
    """How long trtexec times; None leaves trtexec's defaults (200 ms warm-up, at least 10
    queries and 3 s), which the guide used."""

    warmup_ms: int | None = None
    duration_s: int | None = None
    iterations: int | None = None
    threads: bool = False  # the guide's --threads; with one stream it changes nothing
    extra: tuple[str, ...] = field(default_factory=tuple)  # any further trtexec flags

    def flags(self) -> list[str]:
        for name, value in (
            ("warmup_ms", self.warmup_ms),
            ("duration_s", self.duration_s),
            ("iterations", self.iterations),
        ):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise PcbError(f"trtexec {name} must be 0 or more, got {value!r}")
        flags = []
        if self.warmup_ms is not None:
            flags.append(f"--warmUp={self.warmup_ms}")
        if self.duration_s is not None:
            flags.append(f"--duration={self.duration_s}")
        if self.iterations is not None:
            flags.append(f"--iterations={self.iterations}")
        if self.threads:
            flags.append("--threads")
        return [*flags, *self.extra]


@dataclass(frozen=True)
class Exports:
    """trtexec's JSON outputs of a timed run: per-query timings (`--exportTimes`, the primary
    source of every figure) and, optionally, per-layer times (`--exportProfile`)."""

    times: Path | None = None
    profile: Path | None = None

    def flags(self, version: TensorRTVersion) -> list[str]:
        flags = [f"--exportTimes={self.times}"] if self.times is not None else []
        if self.profile is not None:
            if not has_separate_profile_run(version):
                raise PcbError(
                    f"a layer profile needs --separateProfileRun, which trtexec has from "
                    f"TensorRT 7.2 on; this is {version}: time without the profile"
                )
            # The profiler in the timed run would slow every query (and 10.x then prints no
            # summary): profile in a second run instead.
            flags += [f"--exportProfile={self.profile}", "--separateProfileRun"]
        return flags


def _device_flag(device: int) -> str:
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise PcbError(f"CUDA device must be a non-negative integer, got {device!r}")
    return f"--device={device}"


def profile_flags(batch: int, min_batch: int = 1) -> list[str]:
    """One optimisation profile: min `min_batch`, opt = max = `batch`.

    opt = batch makes TensorRT pick its kernels for the timed batch, as the guide's
    `--shapes` alone did (it set min = opt = max); min 1 lets the same engine run the
    remainder batch of a split.
    """
    if isinstance(min_batch, bool) or not isinstance(min_batch, int) or min_batch <= 0:
        raise PcbError(f"min batch must be a positive integer, got {min_batch!r}")
    if min_batch > batch:
        raise PcbError(f"min batch {min_batch} exceeds the batch size {batch}")
    return [
        f"--minShapes={shape(min_batch)}",
        f"--optShapes={shape(batch)}",
        f"--maxShapes={shape(batch)}",
    ]


def build_command(
    onnx: Path | str,
    engine_out: Path | str,
    batch: int,
    precision: str = DEFAULT_PRECISION,
    *,
    version: TensorRTVersion,
    calib_cache: Path | None = None,
    device: int = 0,
    timing: TimingOptions | None = None,
    exports: Exports | None = None,
    workspace_mib: int | None = None,
    min_batch: int = 1,
    skip_inference: bool = False,
    trtexec: str = TRTEXEC,
) -> list[str]:
    """Build an engine from the ONNX with the flags of TensorRT `version`, save it, and
    (unless `skip_inference`) time `batch`, exporting what `exports` asks for."""
    command = [
        trtexec,
        f"--onnx={onnx}",
        *profile_flags(batch, min_batch),
        f"--shapes={shape(batch)}",
        *precision_flags(precision, calib_cache),
        f"--saveEngine={engine_out}",
        _device_flag(device),
    ]
    if workspace_mib is not None:
        command.append(workspace_flag(version, workspace_mib))
    if skip_inference:
        # Build and save only: the accuracy stage times nothing here.
        return [*command, build_only_flag(version)]
    timed = (timing or TimingOptions()).flags()
    return [*command, *timed, *(exports or Exports()).flags(version)]


def load_command(
    engine: Path | str,
    batch: int,
    *,
    version: TensorRTVersion,
    device: int = 0,
    timing: TimingOptions | None = None,
    exports: Exports | None = None,
    trtexec: str = TRTEXEC,
) -> list[str]:
    """Time a saved engine at `batch`; precision and calibration are baked into the engine."""
    return [
        trtexec,
        f"--loadEngine={engine}",
        f"--shapes={shape(batch)}",
        _device_flag(device),
        *(timing or TimingOptions()).flags(),
        *(exports or Exports()).flags(version),
    ]


def version_probe_command(trtexec: str = TRTEXEC) -> list[str]:
    """trtexec prints `&&&& RUNNING TensorRT.trtexec [TensorRT v<N>] # ...` (8.0 on) before
    anything else, --help included, then lists its options: the cheapest way to learn the
    version and the flags before building."""
    return [trtexec, "--help"]


def join(argv: Sequence[str]) -> str:
    """An argv as one line a POSIX shell reads back the same."""
    import shlex

    return shlex.join(list(argv))
