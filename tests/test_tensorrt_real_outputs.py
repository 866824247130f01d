"""Every trtexec output of tests/fixtures/real/trtexec/manifest.json, read by the parsers.

The fixtures are real outputs kept verbatim (the manifest names each one's repository, commit
and path, or issue URL) plus four older samples marked "assembled"; the expected values in the
manifest were read by hand from each file. One parametrised test per file checks that the
parsers give exactly those values, that logs of failed runs give the right advice, that each
real `trtexec --help` lists the flags the flag table says it has, and that the JSON exports give
back the summary trtexec printed for the same run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.tensorrt.flags import listed_options
from pcb.tensorrt.timing_json import compare_with_printed, read_profile, read_times
from pcb.tensorrt.trtexec_output import (
    clean_lines,
    cross_check,
    diagnose,
    parse_device,
    parse_trtexec_output,
    parse_version,
    split_lines,
)

FOLDER = Path(__file__).parent / "fixtures" / "real" / "trtexec"
MANIFEST = json.loads((FOLDER / "manifest.json").read_text(encoding="utf-8"))
LOGS = [e for e in MANIFEST if e["tool"] == "trtexec"]
HELPS = [e for e in MANIFEST if e["tool"] == "trtexec --help"]


def text(entry: dict) -> str:
    return (FOLDER / entry["file"]).read_text(encoding="utf-8")


def ids(entries: list[dict]) -> list[str]:
    return [e["file"] for e in entries]


def test_the_manifest_covers_every_fixture_and_says_where_each_comes_from():
    files = {p.name for p in FOLDER.iterdir()} - {"manifest.json", "README.md"}
    assert files == {e["file"] for e in MANIFEST}
    for entry in MANIFEST:
        assert entry["kind"] in ("verbatim", "assembled")
        source = entry["source"]
        if entry["kind"] == "verbatim":
            # a repository at a commit, an issue thread, or the guide itself
            assert (
                {"repository", "commit", "path"} <= source.keys()
                or source.get("url", "").startswith("https://github.com/")
                or "document" in source
            ), entry["file"]
            if "commit" in source:
                assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    real_logs = [e for e in LOGS if e["kind"] == "verbatim"]
    assert len(real_logs) + len(HELPS) >= 12
    # The versions the corpus spans: 7.x, 8.0, 8.2, 8.4, 8.6, 10.x.
    versions = {str(e["version"]).split(".")[0] + "." + str(e["version"]).split(".")[1][:2]
                for e in real_logs if e["version"] and e["version"][0].isdigit()}  # fmt: skip
    assert {"7.x", "8.0", "8.2", "8.4", "8.6", "10.16"} <= versions


@pytest.mark.parametrize("entry", LOGS, ids=ids(LOGS))
def test_log(entry: dict):
    log = text(entry)
    expected = entry["expected"]
    assert (parse_version(log) or None) == expected.get("version")
    if "device" in expected:
        assert (parse_device(log) or None) == expected["device"]
    for needle in [expected.get("contains"), expected.get("command_has")]:
        if needle:
            assert needle in log
    if "diagnosis" in expected:
        assert expected["diagnosis"] in (diagnose(log) or "")
    if "error" in expected:
        with pytest.raises(PcbError, match=re.escape(expected["error"])):
            parse_trtexec_output(log)
        return
    result = parse_trtexec_output(log)
    assert result.format == expected["format"]
    stats = result.gpu_compute
    assert {
        "min": stats.min_ms,
        "max": stats.max_ms,
        "mean": stats.mean_ms,
        "median": stats.median_ms,
    } == expected["gpu_compute_ms"]
    assert result.percentiles == expected["percentiles_ms"]
    if "99" in expected["percentiles_ms"]:
        assert stats.p99_ms == expected["percentiles_ms"]["99"]
    if "p99_source" in expected:
        assert result.p99_source == expected["p99_source"]
        assert stats.p99_ms == stats.max_ms
    assert result.qps == expected["qps"]
    for key in ("queries", "total_host_walltime_s", "total_gpu_compute_s"):
        if key in expected:
            assert getattr(result, key) == expected[key], key
    if "images_per_s" in expected:
        batch = expected["images_per_s"]["batch"]
        assert round(result.images_per_s(batch), 2) == expected["images_per_s"]["value"]
    if "cross_check" in expected:
        assert cross_check(result, 1).status == expected["cross_check"]
    if expected.get("verbose_explanations"):
        # The verbose explanation starts like the metric line; the numbers came from [I].
        verbose = [line.text for line in split_lines(log) if line.severity == "V"]
        assert "GPU Compute Time: the GPU latency to execute the kernels for a query." in verbose


def test_the_8_0_version_line_is_packed():
    [entry] = [e for e in LOGS if e["expected"].get("version_line")]
    lines = [line for line in clean_lines(text(entry)) if line.startswith("TensorRT version:")]
    assert lines == [f"TensorRT version: {entry['expected']['version_line']}"]
    assert parse_version(text(entry)) == "8.0.3"


def test_tensorrt_7_printed_zero_qps_for_explicit_batch():
    [entry] = [e for e in LOGS if "host_latency_throughput_qps" in e["expected"]]
    assert "throughput: 0 qps" in clean_lines(text(entry))


@pytest.mark.parametrize("entry", HELPS, ids=ids(HELPS))
def test_help(entry: dict):
    help_text = text(entry)
    expected = entry["expected"]
    assert parse_version(help_text) == expected["version"]
    options = listed_options(help_text)
    assert set(expected["lists"]) <= options
    assert not set(expected["lacks"]) & options
    # Prose mentioning a flag on an indented continuation line is not an option line.
    if "--allowGPUFallback is disallowed and --skipInference" in help_text:
        assert "--allowGPUFallback" in options  # listed on its own line


def test_export_times_give_back_the_printed_summary():
    [times_entry] = [e for e in MANIFEST if e["tool"] == "trtexec --exportTimes"]
    expected = times_entry["expected"]
    records = json.loads(text(times_entry))
    assert len(records) == expected["records"]
    summary = read_times(FOLDER / times_entry["file"], warmup_ms=expected["warmup_ms"])
    assert (summary.queries, summary.warmups_dropped) == (
        expected["queries"],
        expected["warmups_dropped"],
    )
    stats = summary.gpu_compute
    for key, value in expected["gpu_compute_ms"].items():
        assert getattr(stats, f"{key}_ms") == value, key
    assert summary.percentiles["99"] == expected["percentiles_ms"]["99"]

    [printed_entry] = [e for e in MANIFEST if e["file"] == expected["printed"]]
    printed = printed_entry["expected"]
    meta = json.loads(text(printed_entry))
    summary_meta = meta["performance_summary"]
    # trex keeps [min, max, mean, median, percentile(99%)] of each printed line.
    assert summary_meta["GPU Compute Time"] == [
        printed["gpu_compute_ms"]["min"],
        printed["gpu_compute_ms"]["max"],
        printed["gpu_compute_ms"]["mean"],
        printed["gpu_compute_ms"]["median"],
        printed["percentiles_ms"]["99"],
    ]
    assert summary_meta["Throughput"] == printed["qps"]
    assert meta["inference_options"]["Duration"] == printed["warm_up"]
    # The JSON reduced as trtexec reduces it gives what trtexec printed, to its 6 digits (the
    # last one may differ: trtexec computes in float32, from unrounded timestamps).
    assert stats.mean_ms == pytest.approx(printed["gpu_compute_ms"]["mean"], abs=5e-5)
    assert summary.qps == pytest.approx(printed["qps"], abs=5e-4)
    assert summary.walltime_s == pytest.approx(printed["total_host_walltime_s"], abs=1e-5)
    assert summary.total_gpu_compute_s == pytest.approx(printed["total_gpu_compute_s"], abs=5e-6)
    agreement = compare_with_printed(
        summary,
        {**printed["gpu_compute_ms"], **printed["percentiles_ms"], "qps": printed["qps"]},
    )
    assert agreement.status == "ok" and agreement.largest_difference < 1e-5
    # Without dropping the warm-up the figures no longer match what was printed.
    unfiltered = read_times(FOLDER / times_entry["file"], warmup_ms=0)
    assert compare_with_printed(unfiltered, {"mean": printed["gpu_compute_ms"]["mean"]}).status == (
        "mismatch"
    )


def test_export_profile():
    [entry] = [e for e in MANIFEST if e["tool"] == "trtexec --exportProfile"]
    expected = entry["expected"]
    profile = read_profile(FOLDER / entry["file"])
    assert (profile.runs, len(profile.layers)) == (expected["runs"], expected["layers"])
    first = profile.layers[0]
    assert (first.name, first.average_ms, first.median_ms, first.percentage) == (
        expected["first"]["name"],
        expected["first"]["average_ms"],
        expected["first"]["median_ms"],
        expected["first"]["percentage"],
    )
    slowest = profile.slowest(1)[0]
    assert (slowest.name, slowest.average_ms) == (
        expected["slowest"]["name"],
        expected["slowest"]["average_ms"],
    )
