"""Parsing trtexec's output: TensorRT 7's block (the guide's 7.3) and TensorRT 8+'s lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.tensorrt.names import platform_name, short_gpu_name
from pcb.tensorrt.trtexec_output import (
    FORMAT_TRT7,
    FORMAT_TRT8,
    cross_check,
    decode_version_number,
    diagnose,
    parse_device,
    parse_trtexec_output,
    parse_version,
    strip_prefix,
)

FIXTURES = Path(__file__).parent / "fixtures" / "real" / "trtexec"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_the_guides_section_7_3_gives_its_1578_09_images_per_second():
    result = parse_trtexec_output(fixture("guide_7_3_tensorrt7.txt"))
    assert result.format == FORMAT_TRT7
    stats = result.gpu_compute
    assert (stats.min_ms, stats.max_ms, stats.mean_ms, stats.median_ms, stats.p99_ms) == (
        37.9453,
        46.219,
        40.5553,
        40.0248,
        46.219,
    )
    assert round(result.images_per_s(64), 2) == 1578.09
    assert result.total_gpu_compute_s == 3.822
    assert result.queries == 94 and result.queries_estimated  # 3.822 s / 40.5553 ms
    assert result.qps is None  # the excerpt has no Host Latency block
    assert (result.tensorrt_version, result.device) == ("", "")
    check = cross_check(result, 64)
    assert check.status == "unavailable" and check.images_per_s == pytest.approx(1578.09, abs=0.01)


def test_tensorrt7_full_summary_ignores_its_zero_qps():
    result = parse_trtexec_output(fixture("tensorrt7_2_t4_bs16_fp16.txt"))
    assert result.format == FORMAT_TRT7
    # The GPU Compute block, not the Host Latency or Enqueue Time blocks before it.
    assert result.gpu_compute.mean_ms == 10.6958
    assert result.gpu_compute.p99_ms == 11.6033
    assert result.percentiles == {"99": 11.6033}
    assert result.qps is None  # `throughput: 0 qps`: 7.x multiplied by the implicit batch, 0
    assert result.total_host_walltime_s == 3.02517
    assert result.device == "Tesla T4"
    assert result.tensorrt_version == ""  # 7.x printed no version
    assert round(result.images_per_s(16), 2) == 1495.91  # the guide's batch-16 T4 figure


def test_tensorrt8_2_single_percentile_and_version_from_the_running_line():
    result = parse_trtexec_output(fixture("tensorrt8_2_t4_bs8_fp16.txt"))
    assert result.format == FORMAT_TRT8
    assert result.gpu_compute.mean_ms == 5.78415
    assert result.percentiles == {"99": 5.85356}
    assert result.gpu_compute.p99_ms == 5.85356
    assert result.tensorrt_version == "8.2.3"
    assert result.device == "Tesla T4"
    assert result.qps == 171.33
    assert result.queries == 513
    assert round(result.images_per_s(8), 2) == 1383.09
    check = cross_check(result, 8)
    assert check.status == "ok" and check.relative_difference < 0.01


def test_tensorrt8_6_three_percentiles():
    result = parse_trtexec_output(fixture("tensorrt8_6_t4_bs32_fp16.txt"))
    assert result.percentiles == {"90": 20.8258, "95": 21.0316, "99": 21.2374}
    assert result.gpu_compute.p99_ms == 21.2374
    assert result.gpu_compute.min_ms == 20.2702 and result.gpu_compute.max_ms == 21.8136
    assert result.tensorrt_version == "8.6.1"
    assert result.total_gpu_compute_s == 2.98394
    assert round(result.images_per_s(32), 2) == 1554.99


def test_tensorrt10_host_bound_run_is_flagged_and_explained():
    result = parse_trtexec_output(fixture("tensorrt10_0_h100_bs1_fp16_hostbound.txt"))
    assert result.tensorrt_version == "10.0.1"
    assert result.device == "NVIDIA H100 80GB HBM3"
    assert result.gpu_compute.mean_ms == 0.948712
    check = cross_check(result, 1)
    assert check.status == "warn"
    assert check.qps_images_per_s == pytest.approx(612.431)
    assert check.relative_difference == pytest.approx(1 - 612.431 * 0.948712 / 1000, rel=1e-6)
    assert "GPU sat idle" in check.message and "tolerance 10%" in check.message
    # A wide enough tolerance accepts it.
    assert cross_check(result, 1, tolerance=0.5).status == "ok"


def test_more_throughput_than_compute_means_overlap():
    text = (
        "Throughput: 30 qps\n"
        "GPU Compute Time: min = 40 ms, max = 41 ms, mean = 40 ms, median = 40 ms, "
        "percentile(99%) = 41 ms\n"
    )
    check = cross_check(parse_trtexec_output(text), 64)  # 1920 vs 1600 images/s
    assert check.status == "warn" and "overlapped" in check.message


def test_crlf_and_unprefixed_lines():
    text = fixture("tensorrt8_6_t4_bs32_fp16.txt").replace("\n", "\r\n")
    assert parse_trtexec_output(text).gpu_compute.mean_ms == 20.5789
    bare = "\n".join(strip_prefix(line) for line in fixture("guide_7_3_tensorrt7.txt").splitlines())
    assert parse_trtexec_output(bare).gpu_compute.mean_ms == 40.5553


def test_hand_copied_line_without_equals_signs():
    text = (
        "GPU Compute Time: min = 3.17834 ms, max = 3.88306 ms, mean = 3.63242 ms, "
        "median = 3.71753 ms, percentile(99%) 3.87793 ms\n"
    )
    assert parse_trtexec_output(text).gpu_compute.p99_ms == 3.87793


def test_scientific_notation():
    text = (
        "GPU Compute Time: min = 9.5e-01 ms, max = 1.2 ms, mean = 1e+00 ms, median = 1 ms, "
        "percentile(99%) = 1.1 ms\n"
    )
    assert parse_trtexec_output(text).gpu_compute.mean_ms == 1.0


def test_a_custom_percentile_falls_back_and_says_so():
    text = "GPU Compute Time: min = 1 ms, max = 3 ms, mean = 2 ms, median = 2 ms, percentile(95%) = 2.5 ms\n"  # noqa: E501
    result = parse_trtexec_output(text)
    assert result.gpu_compute.p99_ms == 3.0
    assert result.p99_source.startswith("max")


def test_no_summary_is_an_error_with_the_tail():
    text = "&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec\n[I] Engine built.\n"
    with pytest.raises(PcbError, match=r"(?s)no GPU compute time .*Engine built"):
        parse_trtexec_output(text)


def test_failed_run_is_an_error():
    text = "[I] GPU Compute\n[I] min: 1 ms\n&&&& FAILED TensorRT.trtexec [TensorRT v8601] # x\n"
    with pytest.raises(PcbError, match="trtexec reported FAILED"):
        parse_trtexec_output(text)


def test_incomplete_line_names_what_is_missing():
    with pytest.raises(PcbError, match="lacks median"):
        parse_trtexec_output("GPU Compute Time: min = 1 ms, max = 2 ms, mean = 1.5 ms\n")


def test_infinite_values_mean_nothing_was_timed():
    text = "GPU Compute Time: min = inf ms, max = inf ms, mean = inf ms, median = inf ms\n"
    with pytest.raises(PcbError, match="no query was timed"):
        parse_trtexec_output(text)


@pytest.mark.parametrize(
    ("number", "version"),
    [(8601, "8.6.1"), (8203, "8.2.3"), (8001, "8.0.1"), (100001, "10.0.1"), (101601, "10.16.1")],
)
def test_version_numbers(number, version):
    assert decode_version_number(number) == version


def test_version_line_wins_over_the_running_tag():
    text = "&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # x\n[I] TensorRT version: 8.6.3\n"
    assert parse_version(text) == "8.6.3"
    assert parse_version("[I] nothing\n") == ""
    assert parse_device("[01/01/2024-00:00:00] [I] Selected Device: Tesla T4\n") == "Tesla T4"


@pytest.mark.parametrize(
    ("device", "short"),
    [
        ("Tesla T4", "T4"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB-HBM3"),
        ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"),
        ("NVIDIA GeForce RTX 2080", "RTX-2080"),
        ("", "GPU"),
    ],
)
def test_short_gpu_names(device, short):
    assert short_gpu_name(device) == short


def test_platform_names():
    assert platform_name("Tesla T4", "fp16") == "T4-trt-fp16"
    assert platform_name("unknown", "int8") == "GPU-trt-int8"


def test_an_unknown_option_is_named_with_the_version():
    # The shape trtexec.cpp gives it: `Unknown option: <name> <value>`, then FAILED.
    text = (
        "&&&& RUNNING TensorRT.trtexec [TensorRT v100001] # trtexec --buildOnly\n"
        "[05/27/2024-16:39:16] [E] Unknown option: --buildOnly \n"
        "&&&& FAILED TensorRT.trtexec [TensorRT v100001] # trtexec --buildOnly\n"
    )
    assert "trtexec of TensorRT 10.0.1 does not know --buildOnly" in diagnose(text)
    with pytest.raises(PcbError, match=r"(?s)reported FAILED.*does not know --buildOnly"):
        parse_trtexec_output(text)
    assert diagnose("[I] all fine\n") is None
