"""trtexec command construction: every option the TensorRT stages pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.tensorrt.trtexec import (
    TimingOptions,
    build_command,
    join,
    load_command,
    precision_flags,
    profile_flags,
    shape,
    validate_precision,
    version_probe_command,
)

ONNX = Path("/results/market/model/pcb.onnx")
ENGINE = Path("/results/market/engines/tensorrt/fp16/pcb_bs64.engine")
CACHE = Path("/results/market/engines/tensorrt/int8/calibration.cache")


def test_the_guides_shape_syntax():
    assert shape(64) == "input_1:64x3x384x128"
    assert shape(1) == "input_1:1x3x384x128"


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_bad_batch_is_refused(bad):
    with pytest.raises(PcbError, match="batch size must be a positive integer"):
        shape(bad)


@pytest.mark.parametrize("value", ["fp16", "FP32", " int8 "])
def test_precisions(value):
    assert validate_precision(value) == value.strip().lower()


def test_unknown_precision_names_the_choices():
    with pytest.raises(PcbError, match="'bf16' is not one of fp16, fp32, int8"):
        validate_precision("bf16")


def test_precision_flags():
    assert precision_flags("fp32") == []
    assert precision_flags("fp16") == ["--fp16"]
    assert precision_flags("int8", CACHE) == ["--int8", f"--calib={CACHE}"]


def test_int8_without_a_cache_says_how_to_make_one():
    with pytest.raises(PcbError, match=r"int8 needs a calibration cache: run `python -m pcb "):
        precision_flags("int8")


def test_profile_is_one_to_the_batch():
    assert profile_flags(64) == [
        "--minShapes=input_1:1x3x384x128",
        "--optShapes=input_1:64x3x384x128",
        "--maxShapes=input_1:64x3x384x128",
    ]
    assert profile_flags(8, min_batch=8)[0] == "--minShapes=input_1:8x3x384x128"
    with pytest.raises(PcbError, match="min batch 16 exceeds the batch size 8"):
        profile_flags(8, min_batch=16)


def test_build_command_fp16_defaults():
    argv = build_command(ONNX, ENGINE, 64)
    assert argv == [
        "trtexec",
        f"--onnx={ONNX}",
        "--minShapes=input_1:1x3x384x128",
        "--optShapes=input_1:64x3x384x128",
        "--maxShapes=input_1:64x3x384x128",
        "--shapes=input_1:64x3x384x128",
        "--fp16",
        f"--saveEngine={ENGINE}",
        "--device=0",
    ]


def test_build_command_every_option():
    timing = TimingOptions(warmup_ms=500, duration_s=10, iterations=100, threads=True)
    argv = build_command(
        ONNX,
        ENGINE,
        32,
        "int8",
        calib_cache=CACHE,
        device=2,
        timing=timing,
        min_batch=4,
        trtexec="/usr/src/tensorrt/bin/trtexec",
    )
    assert argv[0] == "/usr/src/tensorrt/bin/trtexec"
    assert "--minShapes=input_1:4x3x384x128" in argv
    assert argv[argv.index("--int8") + 1] == f"--calib={CACHE}"
    assert "--fp16" not in argv
    assert argv[argv.index("--device=2") :] == [
        "--device=2",
        "--warmUp=500",
        "--duration=10",
        "--iterations=100",
        "--threads",
    ]


def test_build_command_fp32_has_no_precision_flag():
    argv = build_command(ONNX, ENGINE, 4, "fp32")
    assert not [a for a in argv if a in ("--fp16", "--int8") or a.startswith("--calib")]


def test_build_only_skips_inference_and_timing():
    argv = build_command(ONNX, ENGINE, 16, timing=TimingOptions(duration_s=9), skip_inference=True)
    assert argv[-1] == "--skipInference"
    assert not any(a.startswith("--duration") for a in argv)


def test_load_command():
    assert load_command(ENGINE, 64) == [
        "trtexec",
        f"--loadEngine={ENGINE}",
        "--shapes=input_1:64x3x384x128",
        "--device=0",
    ]
    argv = load_command(ENGINE, 1, device=1, timing=TimingOptions(extra=("--useCudaGraph",)))
    assert argv[-2:] == ["--device=1", "--useCudaGraph"]
    # precision and calibration live in the engine: never passed when loading
    assert not any(a.startswith(("--fp16", "--int8", "--calib", "--onnx")) for a in argv)


@pytest.mark.parametrize("device", [-1, True, "0"])
def test_bad_device(device):
    with pytest.raises(PcbError, match="CUDA device must be a non-negative integer"):
        load_command(ENGINE, 1, device=device)


def test_bad_timing():
    with pytest.raises(PcbError, match="duration_s must be 0 or more"):
        TimingOptions(duration_s=-1).flags()


def test_version_probe_and_join():
    assert version_probe_command("trtexec") == ["trtexec", "--help"]
    assert join(["trtexec", "--onnx=/a b/pcb.onnx"]) == "trtexec '--onnx=/a b/pcb.onnx'"
