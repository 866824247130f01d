"""Every real Ascend tool output in tests/fixtures/real/{ais_bench,benchmark,npu_smi,atc}/, read
by the parsers, against the values read by hand into each folder's manifest.json (with where
each file is from, and whether it is verbatim, an excerpt or assembled)."""

from __future__ import annotations

import json

import pytest
from ascend_helpers import REAL

from pcb.ascend.ais_bench_output import (
    parse_multi_device,
    parse_printed_summaries,
    parse_printed_summary,
    parse_summary_json,
)
from pcb.ascend.atc import parse_atc_output
from pcb.ascend.benchmark_legacy import (
    parse_benchmark_perf,
    parse_pure_infer,
    parse_pure_infer_file_name,
)
from pcb.ascend.cann_version import parse_toolkit_info
from pcb.ascend.npu_smi import parse_npu_smi_info
from pcb.errors import PcbError

TOOLS = ("ais_bench", "benchmark", "npu_smi", "atc")
PROVENANCE = {"verbatim", "excerpt", "assembled"}


def manifest(tool: str) -> list[dict]:
    return json.loads((REAL / tool / "manifest.json").read_text(encoding="utf-8"))


ENTRIES = [(tool, entry) for tool in TOOLS for entry in manifest(tool)]


def text_of(tool: str, entry: dict) -> str:
    # newline="" keeps CRLF where the source had it: the parsers must cope.
    with open(REAL / tool / entry["file"], encoding="utf-8", newline="") as handle:
        return handle.read()


def test_corpus_is_complete_and_described():
    on_disk = {
        (tool, path.name)
        for tool in TOOLS
        for path in (REAL / tool).iterdir()
        if path.name not in ("manifest.json", "flags_by_version.json")
    }
    listed = {(tool, entry["file"]) for tool, entry in ENTRIES}
    assert on_disk == listed  # every file described once, every description a file
    assert len(ENTRIES) >= 20
    for _tool, entry in ENTRIES:
        assert {"file", "tool", "version", "source", "provenance", "expected"} <= set(entry)
        assert entry["provenance"] in PROVENANCE
        source = entry["source"]
        assert (
            {"repository", "commit", "path"} <= set(source)
            or "url" in source
            or "description" in source
            or "assembled_from" in source
        )
        if "commit" in source:
            assert len(source["commit"]) == 40 and "lines" in source


@pytest.mark.parametrize(
    "tool, entry",
    [(t, e) for t, e in ENTRIES if t == "ais_bench"],
    ids=lambda v: v["file"] if isinstance(v, dict) else v,
)
def test_ais_bench_outputs(tool, entry):
    text, expected = text_of(tool, entry), entry["expected"]
    kind = expected["kind"]
    if kind == "printed":
        summary = parse_printed_summary(text)
        assert summary.throughput == expected["throughput"]
        assert summary.npu_compute.mean == expected["npu_compute_mean_ms"]
        assert summary.batch_size == expected["batch_size"]
        assert (summary.h2d is not None) == expected["h2d_shown"]
        if "npu_compute_p99_ms" in expected:
            assert summary.npu_compute.p99 == expected["npu_compute_p99_ms"]
        assert parse_multi_device(text) is None
    elif kind in ("summary_json", "summary_json_excerpt"):
        payload = json.loads(text if kind == "summary_json" else "{" + text)
        summary = parse_summary_json(payload, entry["file"])
        assert summary.throughput == expected["throughput"]
        assert summary.npu_compute.mean == expected["npu_compute_mean_ms"]
        assert summary.npu_compute.p99 == expected["npu_compute_p99_ms"]
        assert summary.npu_compute.count == expected["count"]
    elif kind == "multi_device":
        found = parse_multi_device(text)
        assert found is not None and found.total_printed
        assert found.per_device == {int(k): v for k, v in expected["per_device"].items()}
        assert found.total == expected["total"]
        blocks = parse_printed_summaries(text)
        assert len(blocks) == expected["blocks"]
        if blocks:
            # The bug this guards: the last block is one device's figure, not the sum.
            assert blocks[-1].throughput == expected["last_block_throughput"]
            assert found.total > blocks[-1].throughput
        with pytest.raises(PcbError, match="multi-device run"):
            parse_printed_summary(text)
    else:
        pytest.fail(f"unknown kind {kind}")


@pytest.mark.parametrize(
    "tool, entry",
    [(t, e) for t, e in ENTRIES if t == "benchmark"],
    ids=lambda v: v["file"] if isinstance(v, dict) else v,
)
def test_benchmark_outputs(tool, entry):
    text, expected = text_of(tool, entry), entry["expected"]
    if expected["kind"] == "perf":
        perf = parse_benchmark_perf(text, entry["file"])
        assert expected["infer_module"] in perf.modules
        assert perf.interface_rate == expected["interface_rate"]
        assert perf.infer_rate == expected["infer_rate"]
        assert perf.e2e_rate == expected["e2e_rate"]
        if "card_rate_x4" in expected:
            assert perf.card_rate(4) == pytest.approx(expected["card_rate_x4"], abs=1e-9)
    else:
        pure = parse_pure_infer(text, entry["file"])
        assert (pure.rate, pure.latency_ms) == (expected["rate"], expected["latency_ms"])
        name = parse_pure_infer_file_name(entry["file"])
        if "file_model" in expected:
            assert name is not None
            assert (name.model, name.device, name.batch_size) == (
                expected["file_model"],
                expected["file_device"],
                expected["file_batch"],
            )
        else:
            assert name is None


@pytest.mark.parametrize(
    "tool, entry",
    [(t, e) for t, e in ENTRIES if t == "npu_smi"],
    ids=lambda v: v["file"] if isinstance(v, dict) else v,
)
def test_npu_smi_outputs(tool, entry):
    info = parse_npu_smi_info(text_of(tool, entry))
    expected = entry["expected"]
    assert info.version == expected["version"]
    assert len(info.chips) == expected["count"]

    def row(chip):
        return [chip.card, chip.chip, chip.device_id, chip.name, chip.health]

    assert row(info.chips[0]) == expected["first"]
    if "last" in expected:
        assert row(info.chips[-1]) == expected["last"]
    if "bus_id" in expected:
        assert info.chips[0].bus_id == expected["bus_id"]
    for card, devices in expected.get("card_devices", {}).items():
        assert list(info.card_devices(int(card))) == devices


@pytest.mark.parametrize(
    "tool, entry",
    [(t, e) for t, e in ENTRIES if t == "atc"],
    ids=lambda v: v["file"] if isinstance(v, dict) else v,
)
def test_atc_outputs(tool, entry):
    text, expected = text_of(tool, entry), entry["expected"]
    if expected["kind"] == "toolkit_info":
        version = parse_toolkit_info(text, entry["file"])
        assert (version.text, version.major, version.minor) == (
            expected["version"],
            expected["major"],
            expected["minor"],
        )
        assert version.supported
        return
    outcome = parse_atc_output(text)
    assert outcome.success is expected["success"]
    assert [e.code for e in outcome.errors] == expected["codes"]
    if "first_message_starts" in expected:
        assert outcome.errors[0].message.startswith(expected["first_message_starts"])


def test_flags_by_version_cover_every_era():
    versions = json.loads((REAL / "ais_bench" / "flags_by_version.json").read_text())["versions"]
    assert [v["version"] for v in versions][:2] == ["ais_infer 2022-06", "ais_infer 2022-09"]
    for version in versions:
        assert len(version["source"]["commit"]) == 40 and version["options"]
        assert all(option.startswith("--") for option in version["options"])
