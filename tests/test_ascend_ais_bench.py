"""ais_bench: its command line, its printed summary and summary JSON, and the inference and
throughput stages around it (run with the ais_bench and npu-smi doubles)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from ascend_helpers import REAL, fixture_text, make_run, stems, use_doubles
from tiny_model import make_tiny_model

from pcb.ascend.ais_bench import (
    DEFAULT_PROFILE,
    ais_bench_command,
    help_options,
    natural_sort,
    output_name,
    profile_from_options,
    read_profile,
)
from pcb.ascend.ais_bench_output import (
    cross_check,
    find_run_files,
    parse_multi_device,
    parse_printed_summary,
    parse_summary_json,
)
from pcb.ascend.convert import convert_models
from pcb.ascend.npu_infer import ais_infer, check_bins, collect_dumps
from pcb.ascend.npu_perf import ais_perf
from pcb.constants import FEATURE_BYTES
from pcb.errors import PcbError
from pcb.fileio import read_json
from pcb.perf import read_perf_records

ort = pytest.importorskip("onnxruntime")

# ---- versions and the command line ----------------------------------------------------------

VERSIONS = json.loads((REAL / "ais_bench" / "flags_by_version.json").read_text())["versions"]
RETINA = "ais_infer_2022_08_retinaface_310P3_bs16.txt"
RETINA_JSON = "ais_infer_2022_08_retinaface_310P3_bs16_summary_assembled.json"


def test_inference_command():
    assert ais_bench_command(
        "om/pcb_bs16.om",
        input_dir="bins/query",
        output="out",
        batch_size=16,
        devices=[2],
        display_all_summary=True,
    ) == [
        "python3", "-m", "ais_bench", "--model", "om/pcb_bs16.om", "--input", "bins/query",
        "--output", "out", "--outfmt", "BIN", "--batchsize", "16", "--device", "2",
        "--display_all_summary", "True",
    ]  # fmt: skip


def test_pure_inference_command_with_every_timing_option():
    command = ais_bench_command(
        "pcb_dynamic.om",
        output="o",
        outfmt="NPY",
        batch_size=8,
        devices=[1, 3],
        loop=100,
        warmup=5,
        dym_batch=8,
        python="/opt/venv/bin/python",
    )
    assert command == [
        "/opt/venv/bin/python", "-m", "ais_bench", "--model", "pcb_dynamic.om", "--output", "o",
        "--outfmt", "NPY", "--batchsize", "8", "--device", "1,3", "--loop", "100",
        "--warmup_count", "5", "--dymBatch", "8",
    ]  # fmt: skip
    assert ais_bench_command("m.om") == ["python3", "-m", "ais_bench", "--model", "m.om",
                                         "--device", "0"]  # fmt: skip
    with pytest.raises(PcbError, match="--outfmt 'PNG'"):
        ais_bench_command("m.om", outfmt="PNG")


def _commands(profile):
    """Every command the stages build for one batch size: inference, timing on one and on
    several devices (where the version has the multi-device mode)."""
    single = ais_bench_command(
        "m.om", input_dir="b", output="o", batch_size=4, devices=[0], dym_batch=4,
        display_all_summary=True, profile=profile,
    )  # fmt: skip
    timing = ais_bench_command(
        "m.om", output="o", batch_size=4, devices=[1], loop=10, warmup=2,
        display_all_summary=True, profile=profile,
    )  # fmt: skip
    commands = [single, timing]
    if profile.multi_device:
        commands.append(
            ais_bench_command(
                "m.om", output="o", batch_size=4, devices=[0, 1], loop=10, warmup=2, profile=profile
            )  # fmt: skip
        )
    return commands


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v["version"])
def test_commands_use_only_the_options_of_each_version(version):
    """Per version read from the tool's source: supported ones get commands whose every
    option that version has; the others are refused, naming the version, before any run."""
    options = frozenset(version["options"])
    if version["expected"] == "unsupported":
        with pytest.raises(PcbError) as error:
            profile_from_options(options)
        message = str(error.value)
        assert "ais_infer from before 2022-11" in message or "msit benchmark" in message
        return
    profile = profile_from_options(options)
    assert profile.multi_device == (version["expected"] == "multi-device")
    for command in _commands(profile):
        used = {arg for arg in command if arg.startswith("--")}
        assert used <= options, (version["version"], sorted(used - options))
    if not profile.multi_device:
        with pytest.raises(PcbError, match="one device per process"):
            ais_bench_command("m.om", devices=[0, 1], profile=profile)


def test_the_default_profile_is_the_newest_version_read():
    newest = frozenset(VERSIONS[-2]["options"])  # ais_bench 2025-12 (the last is msit's)
    assert DEFAULT_PROFILE.options <= newest and DEFAULT_PROFILE.multi_device
    assert help_options("  --model MODEL, -m MODEL  path\n  --device DEVICE\n") == {
        "--model",
        "--device",
    }


def test_installed_version_is_read_from_its_help(monkeypatch):
    use_doubles(monkeypatch)
    profile = read_profile(sys.executable)
    assert profile.multi_device and profile.name == "ais_bench 0.0.0+double (2023-06 or later)"
    monkeypatch.setenv("AIS_BENCH_DOUBLE_LEGACY", "1")
    with pytest.raises(PcbError, match=r"ais_infer from before 2022-11 .* import-results"):
        read_profile(sys.executable)
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    with pytest.raises(PcbError, match=r"-m ais_bench --help` failed .* not installed"):
        read_profile(sys.executable)


# ---- the printed summaries and the summary JSON ------------------------------------------------


def test_printed_summary_with_h2d_and_d2h():
    summary = parse_printed_summary(fixture_text(RETINA))
    assert summary.throughput == pytest.approx(1503.6005924204671)
    assert summary.batch_size == 16
    assert summary.npu_compute.mean == pytest.approx(10.64112376694632)
    assert summary.npu_compute.p99 == pytest.approx(11.324420213699343)
    assert summary.npu_compute.min == pytest.approx(10.550000190734863)
    assert summary.h2d.median == pytest.approx(11.35861873626709)
    assert summary.d2h.max == pytest.approx(84.31458473205566)


def test_printed_summary_of_a_whole_run():
    summary = parse_printed_summary(fixture_text("msit_benchmark_resnet50_bs1.txt"))
    assert summary.throughput == pytest.approx(407.16610891670894)
    assert summary.batch_size == 1 and summary.h2d is None and summary.d2h is None
    latency = summary.npu_compute.latency()
    assert latency.mean_ms == latency.max_ms == pytest.approx(2.4560000896453857)


def test_printed_summary_takes_the_last_block():
    text = fixture_text("msit_benchmark_resnet50_bs1.txt") + fixture_text(RETINA)
    assert parse_printed_summary(text).batch_size == 16


def test_pipeline_summary_holds_the_mean_only():
    # No real output of `--pipeline 1 --threads N` was found; this line is built from the
    # format string of its summary.py (Ascend/tools history, 2025-12: display()).
    text = (
        "[INFO] -----------------Performance Summary------------------\n"
        "[INFO] NPU_compute_time (ms): mean = 2.5\n"
        "[INFO] throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(2.5): 1600.0\n"
    )
    summary = parse_printed_summary(text)
    assert summary.npu_compute.mean_only and summary.throughput == 1600.0
    assert summary.npu_compute.latency().p99_ms == 2.5
    from_json = parse_summary_json(
        {"NPU_compute_time": {"mean": 2.5, "count": 40}, "throughput": 1600.0}
    )
    assert from_json.npu_compute.count == 40 and from_json.to_dict()["NPU_compute_time"] == {
        "mean": 2.5,
        "count": 40,
    }


def test_no_printed_summary():
    with pytest.raises(PcbError, match="printed no performance summary"):
        parse_printed_summary("[ERROR] open device 0 failed\n")


def test_summary_json_and_cross_check():
    printed = parse_printed_summary(fixture_text(RETINA))
    from_json = parse_summary_json(json.loads(fixture_text(RETINA_JSON)))
    assert from_json.npu_compute.count == 1000
    assert from_json.to_dict()["D2H_latency"]["percentile(99%)"] == pytest.approx(32.75656223297119)
    assert cross_check(printed, from_json, 16) == pytest.approx(1503.6005924204671)


def test_cross_check_refuses_two_different_runs():
    printed = parse_printed_summary(fixture_text(RETINA))
    payload = json.loads(fixture_text(RETINA_JSON))
    payload["throughput"] *= 1.5
    with pytest.raises(PcbError, match=r"printed throughput 1503.6 vs JSON throughput 2255.4 "):
        cross_check(printed, parse_summary_json(payload), 16)
    # Within tolerance: the same run, rounded differently.
    payload = json.loads(fixture_text(RETINA_JSON))
    payload["throughput"] = round(payload["throughput"], 1)
    cross_check(printed, parse_summary_json(payload), 16)
    # --batchsize that is not the model's: ais_bench's own formula gives it away
    with pytest.raises(PcbError, match=r"1000 x 8 / JSON mean"):
        cross_check(printed, parse_summary_json(json.loads(fixture_text(RETINA_JSON))), 8)


def test_multi_device_sum_must_be_the_devices_sum():
    text = fixture_text("ais_bench_2023_07_dbnet_2_devices.txt")
    cut = "\n".join(line for line in text.splitlines() if "i:0 " not in line)
    with pytest.raises(PcbError, match="not the sum of its devices"):
        parse_multi_device(cut)
    no_total = "\n".join(line for line in text.splitlines() if "summary throughput" not in line)
    found = parse_multi_device(no_total)
    assert not found.total_printed and found.total == pytest.approx(449.19304927470046)


@pytest.mark.parametrize(
    "payload",
    [{}, {"throughput": 1.0}, {"NPU_compute_time": {"min": 1}, "throughput": 2}, []],
)
def test_not_a_summary_json(payload):
    with pytest.raises(PcbError, match="ais_bench summary"):
        parse_summary_json(payload)


def test_summary_file_beside_or_inside_the_output_folder(tmp_path: Path):
    beside = tmp_path / "a"
    (beside / "2024_01_01-00_00_00").mkdir(parents=True)
    (beside / "2024_01_01-00_00_00_summary.json").write_text("{}")
    assert find_run_files(beside).summary.name == "2024_01_01-00_00_00_summary.json"
    inside = tmp_path / "b"
    (inside / "2022_07_09-18_23_06").mkdir(parents=True)
    (inside / "2022_07_09-18_23_06" / "sumary.json").write_text("{}")  # ais_infer, 2022
    assert find_run_files(inside).summary == inside / "2022_07_09-18_23_06" / "sumary.json"
    (inside / "2022_07_09-18_23_06" / "sumary.json").unlink()
    assert find_run_files(inside).summary is None  # the printed summary is then all there is


def test_natural_order_and_output_names():
    assert natural_sort(["img10.bin", "img9.bin", "Img1.bin", "img1.bin"]) == [
        "Img1.bin", "img1.bin", "img9.bin", "img10.bin",
    ]  # fmt: skip
    assert output_name("0001_c1s1_000151_00.bin") == "0001_c1s1_000151_00_0.bin"
    assert output_name("a.b.bin", 1, "NPY") == "a_1.npy"


# ---- moving ais_bench's outputs into dumps ----------------------------------------------------


def _feature(value: float, count: int = 1) -> bytes:
    return np.full(count * FEATURE_BYTES // 4, value, dtype=np.float32).tobytes()


def test_collect_per_file_outputs(tmp_path: Path):
    produced, dest = tmp_path / "2024_01_01-00_00_00", tmp_path / "query"
    produced.mkdir()
    inputs = ["a.bin", "b.bin", "c.bin"]
    for index, name in enumerate(inputs):
        (produced / output_name(name)).write_bytes(_feature(index))
    (produced / "a_1.bin").write_bytes(b"other output")  # outputs other than 0 are left alone
    assert collect_dumps(produced, inputs, 2, dest) == 3
    assert sorted(os.listdir(dest)) == ["a_0.bin", "b_0.bin", "c_0.bin"]
    assert np.fromfile(dest / "c_0.bin", dtype=np.float32)[0] == 2


def test_collect_per_batch_outputs_drops_the_padding(tmp_path: Path):
    produced, dest = tmp_path / "out", tmp_path / "gallery"
    produced.mkdir()
    inputs = [f"{i}.bin" for i in range(5)]
    # ais_infer: one file per batch of 2, named after its first input; the last padded.
    data = np.arange(6, dtype=np.float32).repeat(FEATURE_BYTES // 4)
    for start in range(0, 6, 2):
        chunk = data[start * (FEATURE_BYTES // 4) : (start + 2) * (FEATURE_BYTES // 4)]
        (produced / output_name(f"{start}.bin")).write_bytes(chunk.tobytes())
    assert collect_dumps(produced, inputs, 2, dest) == 5
    assert sorted(os.listdir(dest)) == [f"{i}_0.bin" for i in range(5)]
    for i in range(5):
        assert np.fromfile(dest / f"{i}_0.bin", dtype=np.float32)[-1] == i


def test_collect_says_what_is_missing_and_why(tmp_path: Path):
    produced = tmp_path / "out"
    produced.mkdir()
    (produced / "a_0.bin").write_bytes(_feature(1.0))
    (produced / "b_0.bin").write_bytes(b"\0" * (FEATURE_BYTES // 2))
    with pytest.raises(PcbError) as error:
        collect_dumps(produced, ["a.bin", "b.bin", "c.bin"], 1, tmp_path / "q")
    message = str(error.value)
    assert "no output for 2: b.bin, c.bin" in message
    assert f"b_0.bin ({FEATURE_BYTES // 2} bytes)" in message and "float16" in message


def test_bins_folder_must_match_its_list(tmp_path: Path):
    layout = make_run(tmp_path / "run", {"query": 3})
    names = stems("query", 3)
    assert check_bins(layout.bins_dir("query"), names) == [f"{s}.bin" for s in names]
    (layout.bins_dir("query") / "stray.bin").write_bytes(b"x")
    with pytest.raises(PcbError, match=r"bins not in the list 1: stray.bin; re-run"):
        check_bins(layout.bins_dir("query"), names)


# ---- the inference stage -----------------------------------------------------------------------


def _reference(layout, split: str, stem: str) -> np.ndarray:
    session = ort.InferenceSession(str(layout.onnx_path), providers=["CPUExecutionProvider"])
    image = np.fromfile(layout.bins_dir(split) / f"{stem}.bin", dtype=np.float32)
    return session.run(None, {"input_1": image.reshape(1, 3, 384, 128)})[0][0]


@pytest.mark.parametrize("per_batch", [False, True])
def test_infer_puts_one_dump_per_image_where_evaluate_reads(tmp_path, monkeypatch, per_batch):
    use_doubles(monkeypatch)
    if per_batch:
        monkeypatch.setenv("AIS_BENCH_DOUBLE_PER_BATCH", "1")
    layout = make_run(tmp_path / "run", {"query": 5, "gallery": 7})
    convert_models(layout, "310P3", [4], quiet=True)
    counts = ais_infer(layout, "310P3", batch_size=4, device=1, quiet=True)
    assert counts == {"query": 5, "gallery": 7}
    key = "Ascend310P3-ais_bench"
    for split, count in counts.items():
        folder = layout.dumps_dir(key, split)
        assert sorted(os.listdir(folder)) == sorted(f"{s}_0.bin" for s in stems(split, count))
        stem = stems(split, count)[-1]  # in the padded last batch
        dumped = np.fromfile(folder / f"{stem}_0.bin", dtype=np.float32).reshape(2048, 6, 1)
        np.testing.assert_allclose(dumped, _reference(layout, split, stem), rtol=2e-3, atol=1e-3)
        record = read_json(layout.dumps_dir(key, split).parent / f"{split}.json")
        assert record["complete"] and record["inferred"] == count and record["device"] == 1
        assert record["backend"] == "ais_bench" and record["backend_version"] == "0.0.0+double"
        assert record["summary"]["throughput"] > 0 and "H2D_latency" in record["summary"]
    assert not (layout.root / "dumps" / key / ".ais_bench").exists()
    assert (layout.root / "logs" / "infer" / key / "query_summary.json").is_file()


def test_infer_is_resumable_and_redoes_a_changed_model(tmp_path, monkeypatch, capsys):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 2, "gallery": 3})
    convert_models(layout, "310P3", [2], quiet=True)
    ais_infer(layout, "310P3", batch_size=2, quiet=True)
    capsys.readouterr()
    ais_infer(layout, "310P3", batch_size=2, quiet=True)
    assert "query: all 2 dumps already complete" in capsys.readouterr().out
    make_tiny_model(layout.onnx_path, batch=2)  # another export: converted and inferred again
    convert_models(layout, "310P3", [2], quiet=True)
    ais_infer(layout, "310P3", batch_size=2, quiet=True)
    assert "already complete" not in capsys.readouterr().out


def test_infer_dynamic_model_and_its_gears(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 3, "gallery": 2})
    convert_models(layout, "310", [1, 2], dynamic=True, quiet=True)
    ais_infer(layout, "310", batch_size=2, dynamic=True, quiet=True)
    assert len(os.listdir(layout.dumps_dir("Ascend310-dynamic-ais_bench", "query"))) == 3
    with pytest.raises(PcbError, match=r"pcb_dynamic.om takes batch sizes \[1, 2\], not 4"):
        ais_infer(layout, "310", batch_size=4, dynamic=True, quiet=True)


def test_infer_failure_shows_the_tool_error(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 2, "gallery": 2})
    convert_models(layout, "310P3", [4], quiet=True)
    for path in layout.bins_dir("query").iterdir():
        path.write_bytes(path.read_bytes()[:1000])  # bins of the wrong size
    with pytest.raises(PcbError) as error:
        ais_infer(layout, "310P3", batch_size=4, quiet=True)
    message = str(error.value)
    assert (
        "ais_bench failed with exit status 1: [ERROR] arg0 tensorsize: 2359296 filesize: 1000"
        in (message)
    )
    assert "Hint: a bin's size does not divide" in message and "Full output:" in message


def test_infer_needs_the_converted_model(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 1, "gallery": 1})
    with pytest.raises(PcbError, match=r"pcb_bs16.om not found .* --chip 310P3 --batch-sizes 16"):
        ais_infer(layout, "310P3", batch_size=16, quiet=True)


# ---- the throughput stage ----------------------------------------------------------------------


def test_perf_one_device(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 1})
    convert_models(layout, "310P3", [1, 4], quiet=True)
    records = ais_perf(layout, "310P3", [1, 4], devices=[0], iterations=20, warmup=2, quiet=True)
    assert [(r.platform, r.batch_size, r.scope) for r in records] == [
        ("Ascend310P3", 1, "chip"),  # device 0 is one of the Duo card's two chips
        ("Ascend310P3", 4, "chip"),
    ]
    record = records[1]
    assert record.backend == record.tool == "ais_bench" and record.tool_version == "0.0.0+double"
    # the double's compute time for batch 4: 1.5 ms + 0/0.01/0.02 by index
    assert record.latency.min_ms == pytest.approx(1.5) and record.latency.max_ms == pytest.approx(
        1.52
    )
    assert record.images_per_s == pytest.approx(4000 / record.latency.mean_ms)
    assert record.iterations == 20
    assert record.extra["H2D_latency_ms"]["mean"] == pytest.approx(0.45)
    assert record.extra["D2H_latency_ms"]["count"] == 20
    assert record.extra["loop"] == 20 and record.extra["warmup"] == 2
    assert record.device == "Ascend310P3 (device 0)"
    assert read_perf_records(layout.perf_path("Ascend310P3-ais_bench")) == records


def test_perf_devices_of_one_card_sum_to_the_card(tmp_path, monkeypatch):
    use_doubles(monkeypatch)  # npu-smi: the 300I Duo, devices 0 and 1 on card 2
    layout = make_run(tmp_path / "run", {"query": 1})
    convert_models(layout, "310P3", [4], aoe=True, quiet=True)
    records = ais_perf(
        layout, "auto", [4], devices=[0, 1], iterations=5, warmup=0, aoe=True, quiet=True
    )
    assert [(r.platform, r.scope) for r in records] == [
        ("Ascend310P3-aoe-dev0", "chip"),
        ("Ascend310P3-aoe-dev1", "chip"),
        ("Ascend310P3-aoe", "card"),
    ]
    card = records[2]
    assert card.images_per_s == pytest.approx(records[0].images_per_s + records[1].images_per_s)
    assert card.extra["card"] == 2 and card.extra["devices"] == [0, 1]
    assert card.extra["npu_smi_version"] == "25.2.0"  # the Duo table's header
    assert card.extra["per_device_images_per_s"]["1"] == records[1].images_per_s
    assert layout.perf_path("Ascend310P3-aoe-ais_bench").is_file()


def test_perf_without_npu_smi_labels_the_sum_by_chips(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    monkeypatch.setenv("NPU_SMI_DOUBLE_TABLE", str(tmp_path / "absent"))
    layout = make_run(tmp_path / "run", {"query": 1})
    convert_models(layout, "310", [1], quiet=True)
    records = ais_perf(layout, "310", [1], devices=[0, 1, 2], iterations=3, warmup=0, quiet=True)
    assert records[-1].platform == "Ascend310" and records[-1].scope == "3 chips"
    assert records[-1].extra["npu_smi"].startswith("unavailable")


def test_perf_failure_names_the_device(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    monkeypatch.setenv("PCB_DOUBLE_CHECK_DEVICES", "1")  # no /dev/davinci<N> here
    layout = make_run(tmp_path / "run", {"query": 1})
    convert_models(layout, "310P3", [1], quiet=True)
    with pytest.raises(PcbError, match=r"ais_bench on device 3 failed .* open device 3 failed"):
        ais_perf(layout, "310P3", [1], devices=[3], iterations=1, warmup=0, quiet=True)


# ---- versions, summary places and device ids, through the stages ------------------------------


def test_infer_reads_ais_infer_sumary_inside_its_folder(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    monkeypatch.setenv("AIS_BENCH_DOUBLE_SUMMARY", "inside")  # 2022: <ts>/sumary.json
    layout = make_run(tmp_path / "run", {"query": 3, "gallery": 2})
    convert_models(layout, "310P3", [2], quiet=True)
    assert ais_infer(layout, "310P3", batch_size=2, quiet=True) == {"query": 3, "gallery": 2}
    record = read_json(layout.dumps_dir("Ascend310P3-ais_bench", "query").parent / "query.json")
    assert record["summary"]["throughput"] > 0
    names = os.listdir(layout.dumps_dir("Ascend310P3-ais_bench", "query"))
    assert sorted(names) == sorted(f"{s}_0.bin" for s in stems("query", 3))


def test_unsupported_version_is_named_before_anything_runs(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    monkeypatch.setenv("AIS_BENCH_DOUBLE_LEGACY", "1")
    layout = make_run(tmp_path / "run", {"query": 1, "gallery": 1})
    convert_models(layout, "310P3", [1], quiet=True)
    with pytest.raises(PcbError, match="ais_infer from before 2022-11"):
        ais_infer(layout, "310P3", batch_size=1, quiet=True)
    with pytest.raises(PcbError, match="ais_infer from before 2022-11"):
        ais_perf(layout, "310P3", [1], devices=[0], iterations=1, warmup=0, quiet=True)
    assert not (layout.root / "dumps").exists() and not (layout.root / "logs" / "perf").exists()


def test_container_device_ids_are_positions(tmp_path, monkeypatch):
    """A container given host devices 3 and 5 sees two chips, 0 and 1 (visible.py): the tool
    gets the position, the records keep the host id."""
    use_doubles(monkeypatch)
    monkeypatch.setenv("PCB_DOUBLE_CHIPS", "2")
    layout = make_run(tmp_path / "run", {"query": 2, "gallery": 1})
    convert_models(layout, "310P3", [1], quiet=True)
    with pytest.raises(PcbError, match="open device 5 failed"):  # the host id, unmapped
        ais_infer(layout, "310P3", batch_size=1, device=5, quiet=True)
    monkeypatch.setenv("PCB_NPU_CONTAINER_DEVICES", "3,5")
    ais_infer(layout, "310P3", batch_size=1, device=5, quiet=True)
    record = read_json(layout.dumps_dir("Ascend310P3-ais_bench", "query").parent / "query.json")
    assert record["device"] == 5 and record["tool_device"] == 1
    assert "--device" in record["command"]
    assert record["command"][record["command"].index("--device") + 1] == "1"
    records = ais_perf(layout, "310P3", [1], devices=[3, 5], iterations=2, warmup=0, quiet=True)
    assert [r.platform for r in records] == [
        "Ascend310P3-dev3",
        "Ascend310P3-dev5",
        "Ascend310P3",
    ]
    assert records[-1].extra["tool_devices"] == {"3": 0, "5": 1}
    with pytest.raises(PcbError, match=r"NPU device\(s\) \[4\] are not in this container"):
        ais_perf(layout, "310P3", [1], devices=[4], iterations=1, warmup=0, quiet=True)


def test_multi_device_mode_reads_the_summed_throughput(tmp_path, monkeypatch, capsys):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 1})
    convert_models(layout, "310P3", [2], quiet=True)
    records = ais_perf(layout, "310P3", [2], devices=[0, 1], iterations=3, warmup=0)
    out = capsys.readouterr().out
    assert out.count("==> ") == 1 and "--device 0,1" in out  # one ais_bench for both
    card = records[-1]
    assert card.extra["summed_by"].startswith("ais_bench's multi-device mode")
    assert "summary throughput:" in Path(records[0].extra["log"]).read_text()
    assert card.images_per_s == pytest.approx(sum(r.images_per_s for r in records[:2]))


def test_before_the_multi_device_mode_one_process_per_device(tmp_path, monkeypatch, capsys):
    use_doubles(monkeypatch)
    monkeypatch.setenv("AIS_BENCH_DOUBLE_LEGACY", "2022-11")
    layout = make_run(tmp_path / "run", {"query": 1})
    convert_models(layout, "310P3", [2], quiet=True)
    records = ais_perf(layout, "310P3", [2], devices=[0, 1], iterations=3, warmup=0)
    out = capsys.readouterr().out
    assert out.count("==> device ") == 2 and "--device 0,1" not in out
    assert records[-1].extra["summed_by"].startswith("one ais_bench per chip")
    assert records[-1].extra["tool_profile"] == "ais_bench 0.0.0+double (2022-11 to 2023-06)"


def test_without_a_summary_json_the_printed_summary_is_read(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    monkeypatch.setenv("AIS_BENCH_DOUBLE_SUMMARY", "none")
    layout = make_run(tmp_path / "run", {"query": 2, "gallery": 1})
    convert_models(layout, "310P3", [1], quiet=True)
    ais_infer(layout, "310P3", batch_size=1, quiet=True)
    record = read_json(layout.dumps_dir("Ascend310P3-ais_bench", "query").parent / "query.json")
    assert record["summary_source"].startswith("printed summary only")
    [perf] = ais_perf(layout, "310P3", [1], devices=[0], iterations=4, warmup=0, quiet=True)
    assert perf.extra["source"].startswith("printed summary only")
    assert perf.images_per_s == pytest.approx(1000 / perf.latency.mean_ms)
