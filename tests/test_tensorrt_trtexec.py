"""trtexec command construction: every option the TensorRT stages pass, for each version.

The flags that differ between versions are checked two ways: against the flag table read from
trtexec's sources (pcb/tensorrt/flags.py), and against the real `trtexec --help` of 8.2.1,
8.6.1, 10.0.1 and 10.16.1 (tests/fixtures/real/trtexec/help_*.txt): every flag a command uses
must be one that version lists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.tensorrt.flags import check_listed, listed_options
from pcb.tensorrt.trtexec import (
    Exports,
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
from pcb.tensorrt.versions import TensorRTVersion

ONNX = Path("/results/market/model/pcb.onnx")
ENGINE = Path("/results/market/engines/tensorrt/fp16/pcb_bs64.engine")
CACHE = Path("/results/market/engines/tensorrt/int8/calibration.cache")
TIMES = Path("/results/market/perf/tensorrt-fp16/trtexec_bs64.times.json")
PROFILE = Path("/results/market/perf/tensorrt-fp16/trtexec_bs64.profile.json")
V10 = TensorRTVersion(10, 0, 1)
HELPS = Path(__file__).parent / "fixtures" / "real" / "trtexec"


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
    with pytest.raises(
        PcbError, match=r"'bf16' \(did you mean fp16\?\) is not one of fp16, fp32, int8"
    ):
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
    argv = build_command(ONNX, ENGINE, 64, version=V10)
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
        version=V10,
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
    argv = build_command(ONNX, ENGINE, 4, "fp32", version=V10)
    assert not [a for a in argv if a in ("--fp16", "--int8") or a.startswith("--calib")]


def test_build_only_skips_inference_and_timing():
    argv = build_command(
        ONNX,
        ENGINE,
        16,
        version=V10,
        timing=TimingOptions(duration_s=9),
        exports=Exports(times=TIMES),
        skip_inference=True,
    )
    assert argv[-1] == "--skipInference"
    assert not any(a.startswith(("--duration", "--exportTimes")) for a in argv)


def test_load_command():
    assert load_command(ENGINE, 64, version=V10) == [
        "trtexec",
        f"--loadEngine={ENGINE}",
        "--shapes=input_1:64x3x384x128",
        "--device=0",
    ]
    argv = load_command(
        ENGINE, 1, version=V10, device=1, timing=TimingOptions(extra=("--useCudaGraph",))
    )
    assert argv[-2:] == ["--device=1", "--useCudaGraph"]
    # precision and calibration live in the engine: never passed when loading
    assert not any(a.startswith(("--fp16", "--int8", "--calib", "--onnx")) for a in argv)


@pytest.mark.parametrize("device", [-1, True, "0"])
def test_bad_device(device):
    with pytest.raises(PcbError, match="CUDA device must be a non-negative integer"):
        load_command(ENGINE, 1, version=V10, device=device)


def test_bad_timing():
    with pytest.raises(PcbError, match="duration_s must be 0 or more"):
        TimingOptions(duration_s=-1).flags()


def test_version_probe_and_join():
    assert version_probe_command("trtexec") == ["trtexec", "--help"]
    assert join(["trtexec", "--onnx=/a b/pcb.onnx"]) == "trtexec '--onnx=/a b/pcb.onnx'"


# ---- flags by version ------------------------------------------------------------------------

# version: (build-only flag, workspace flag for 512 MiB), from sampleOptions.cpp of each release
# branch of NVIDIA/TensorRT (the table in pcb/tensorrt/flags.py).
TABLE = {
    TensorRTVersion(7, 0, 0): ("--buildOnly", "--workspace=512"),
    TensorRTVersion(7, 2, 3): ("--buildOnly", "--workspace=512"),
    TensorRTVersion(8, 0, 3): ("--buildOnly", "--workspace=512"),
    TensorRTVersion(8, 2, 1): ("--buildOnly", "--workspace=512"),
    TensorRTVersion(8, 4, 1): ("--buildOnly", "--memPoolSize=workspace:512"),
    TensorRTVersion(8, 5, 3): ("--buildOnly", "--memPoolSize=workspace:512"),
    TensorRTVersion(8, 6, 1): ("--skipInference", "--memPoolSize=workspace:512"),
    TensorRTVersion(9, 2, 0): ("--skipInference", "--memPoolSize=workspace:512"),
    TensorRTVersion(10, 0, 1): ("--skipInference", "--memPoolSize=workspace:512"),
    TensorRTVersion(10, 16, 1): ("--skipInference", "--memPoolSize=workspace:512"),
}


@pytest.mark.parametrize("version", TABLE, ids=str)
def test_flags_by_version(version: TensorRTVersion):
    build_only, workspace = TABLE[version]
    build = build_command(ONNX, ENGINE, 64, version=version, workspace_mib=512, skip_inference=True)
    assert build[-2:] == [workspace, build_only]
    timed = build_command(ONNX, ENGINE, 64, version=version, exports=Exports(times=TIMES))
    assert timed[-1] == f"--exportTimes={TIMES}"  # in every version
    # --explicitBatch is never passed: deprecated from 8.2 and unknown to 10.0.
    assert "--explicitBatch" not in build + timed


def every_command(version: TensorRTVersion) -> list[list[str]]:
    """Every shape of command the stages run, all options on."""
    timing = TimingOptions(warmup_ms=500, duration_s=10, iterations=100, threads=True)
    exports = Exports(times=TIMES, profile=PROFILE)
    return [
        build_command(ONNX, ENGINE, 64, "fp16", version=version, timing=timing, exports=exports,
                      workspace_mib=1024),
        build_command(ONNX, ENGINE, 8, "int8", version=version, calib_cache=CACHE,
                      workspace_mib=1024, skip_inference=True),
        load_command(ENGINE, 64, version=version, timing=timing, exports=exports),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("help_file", "version"),
    [
        ("help_trt8_2_1.txt", TensorRTVersion(8, 2, 1)),
        ("help_trt8_6_1.txt", TensorRTVersion(8, 6, 1)),
        ("help_trt10_0_1.txt", TensorRTVersion(10, 0, 1)),
        ("help_trt10_16_1.txt", TensorRTVersion(10, 16, 1)),
    ],
)
def test_every_flag_is_one_the_real_help_of_that_version_lists(help_file, version):
    help_text = (HELPS / help_file).read_text(encoding="utf-8")
    options = listed_options(help_text)
    assert len(options) > 60  # the whole help was read, not a fragment
    for argv in every_command(version):
        used = {a.split("=", 1)[0] for a in argv[1:]}
        assert used <= options, used - options
        check_listed(argv, help_text, version)  # what the stage does before running


def test_flags_of_another_version_are_refused_by_that_help():
    """The check is not vacuous: 10.0.1's command does not fit 8.2.1's help, nor the reverse."""
    help_821 = (HELPS / "help_trt8_2_1.txt").read_text(encoding="utf-8")
    help_1001 = (HELPS / "help_trt10_0_1.txt").read_text(encoding="utf-8")
    newer = build_command(ONNX, ENGINE, 8, version=V10, workspace_mib=64, skip_inference=True)
    with pytest.raises(PcbError, match=r"does not list --memPoolSize, --skipInference"):
        check_listed(newer, help_821, TensorRTVersion(8, 2, 1))
    older = build_command(
        ONNX, ENGINE, 8, version=TensorRTVersion(8, 2, 1), workspace_mib=64, skip_inference=True
    )
    with pytest.raises(PcbError, match=r"does not list --workspace, --buildOnly"):
        check_listed(older, help_1001, V10)
    check_listed(newer, "no option lines at all", V10)  # nothing to check against: no refusal


def test_profile_needs_a_separate_run():
    flags = Exports(times=TIMES, profile=PROFILE).flags(V10)
    assert flags == [f"--exportTimes={TIMES}", f"--exportProfile={PROFILE}", "--separateProfileRun"]
    with pytest.raises(PcbError, match="from TensorRT 7.2 on; this is 7.1.3"):
        Exports(profile=PROFILE).flags(TensorRTVersion(7, 1, 3))


def test_bad_workspace():
    with pytest.raises(PcbError, match="workspace must be a positive number of MiB"):
        build_command(ONNX, ENGINE, 8, version=V10, workspace_mib=0)
