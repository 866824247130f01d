"""The TensorRT stages in-process, with the trtexec double of tests/doubles/tensorrt as trtexec.

No GPU: the double prints TensorRT 10's format and writes stand-in engines; the Python-API
backend is replaced by a fake (its own tests are in test_tensorrt_backend.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcb.backends.base import Backend
from pcb.cli import main as cli
from pcb.constants import FEATURE_BYTES, FEATURE_SHAPE, INPUT_SHAPE
from pcb.errors import PcbError
from pcb.evaluate import find_dumps
from pcb.fileio import read_json
from pcb.infer import infer_record_path
from pcb.layout import RunLayout
from pcb.perf import read_perf_records
from pcb.tensorrt import tools
from pcb.tensorrt.engine_cache import calibration_cache_path, engine_path, read_record
from pcb.tensorrt.stages import perf_log_dir, run_trt_infer, run_trt_perf
from pcb.tensorrt.tools import Completed
from pcb.tensorrt.trtexec import TimingOptions

DOUBLE = Path(__file__).parent / "doubles" / "tensorrt" / "trtexec"
STEMS = {"query": ["0001_c1s1_000151_00", "0002_c2s1_000301_00", "0003_c3s1_000551_00"]}
STEMS["gallery"] = [f"{i:04d}_c{i % 6 + 1}s1_00{i:04d}_01" for i in range(1, 8)]


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the double appends each call's arguments to."""
    path = tmp_path / "trtexec-calls.jsonl"
    monkeypatch.setenv("TRTEXEC_DOUBLE_CALLS", str(path))
    for name in ("TRTEXEC_DOUBLE_VERSION", "TRTEXEC_DOUBLE_DEVICE", "TRTEXEC_DOUBLE_QPS"):
        monkeypatch.delenv(name, raising=False)
    return path


def read_calls(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    # --help is the version probe, made once per stage run
    return [a for a in (json.loads(line) for line in lines) if a != ["--help"]]


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    layout = RunLayout(tmp_path / "results" / "market")
    layout.model_dir.mkdir(parents=True)
    layout.onnx_path.write_bytes(b"stand-in onnx")
    return layout


def add_bins(layout: RunLayout) -> None:
    rng = np.random.default_rng(0)
    for split, stems in STEMS.items():
        folder = layout.bins_dir(split)
        folder.mkdir(parents=True)
        lines = []
        for index, stem in enumerate(stems):
            rng.standard_normal(INPUT_SHAPE, dtype=np.float32).tofile(folder / f"{stem}.bin")
            lines.append(f"{index} ./bins/{split}/{stem}.bin 128 384")
        layout.info_path(split).write_text("\n".join(lines) + "\n")


def perf(layout: RunLayout, sizes=(1, 64), **kwargs):
    return run_trt_perf(layout, batch_sizes=sizes, trtexec=str(DOUBLE), quiet=True, **kwargs)


# ---- trt-perf --------------------------------------------------------------------------------


def test_perf_builds_then_reuses_engines(layout: RunLayout, calls: Path):
    records = perf(layout)
    assert [r.batch_size for r in records] == [1, 64]
    first = records[1]
    assert first.platform == "T4-trt-fp16"
    assert (first.backend, first.tool, first.scope) == ("tensorrt", "trtexec", "gpu")
    assert (first.tool_version, first.device) == ("10.0.1", "Tesla T4")
    # The double's queries vary +-2% around (0.55 + 0.62 x 64) ms at batch 64 fp16.
    assert first.latency.mean_ms == pytest.approx(40.23, rel=0.01)
    assert first.images_per_s == pytest.approx(1000 * 64 / first.latency.mean_ms)
    assert first.iterations > 0
    assert first.extra["cross_check"]["status"] == "ok"
    # The figures come from the --exportTimes JSON, which agrees with the printed summary.
    assert first.extra["timing_source"] == "exportTimes"
    assert first.extra["times_json"] == str(
        perf_log_dir(layout, "fp16") / "trtexec_bs64.times.json"
    )
    assert first.extra["json_vs_printed"]["status"] == "ok"
    assert first.extra["warmup_ms"] == 200.0
    assert first.extra["engine_reused"] is False
    assert first.extra["shapes"]["opt"] == "input_1:64x3x384x128"
    assert first.extra["percentiles_ms"].keys() == {"90", "95", "99"}
    assert read_perf_records(layout.perf_path("tensorrt-fp16")) == records
    assert (perf_log_dir(layout, "fp16") / "trtexec_bs64.log").read_text().startswith("# ")
    engine = engine_path(layout, "fp16", 64)
    assert read_record(engine)["device"] == "Tesla T4"
    built = read_calls(calls)
    assert all(any(a.startswith("--saveEngine=") for a in argv) for argv in built)
    assert all("--fp16" in argv for argv in built)

    again = perf(layout)
    loaded = read_calls(calls)[len(built) :]
    expected = [engine_path(layout, "fp16", 1), engine]
    assert [a[0] for a in loaded] == [f"--loadEngine={path}" for path in expected]
    assert all(r.extra["engine_reused"] for r in again)
    assert again[1].images_per_s == pytest.approx(first.images_per_s)


def test_a_changed_onnx_rebuilds(layout: RunLayout, calls: Path):
    perf(layout, sizes=(8,))
    layout.onnx_path.write_bytes(b"another model")
    [record] = perf(layout, sizes=(8,))
    assert record.extra["engine_reused"] is False
    assert "the ONNX model changed" in record.extra["engine_reason"]


def test_a_new_tensorrt_rebuilds(layout: RunLayout, calls: Path, monkeypatch):
    perf(layout, sizes=(8,))
    monkeypatch.setenv("TRTEXEC_DOUBLE_VERSION", "10.3.0")
    [record] = perf(layout, sizes=(8,))
    assert "another TensorRT version ('10.0.1' -> '10.3.0')" in record.extra["engine_reason"]
    assert record.tool_version == "10.3.0"


def test_an_engine_of_another_gpu_is_rebuilt(layout: RunLayout, calls: Path, monkeypatch):
    perf(layout, sizes=(4,))
    # No nvidia-smi here, so the key cannot tell; the double refuses the foreign engine.
    monkeypatch.setenv("TRTEXEC_DOUBLE_DEVICE", "NVIDIA A10")
    [record] = perf(layout, sizes=(4,))
    assert record.extra["engine_reason"] == "the saved engine failed to load"
    assert record.platform == "A10-trt-fp16"
    assert read_record(engine_path(layout, "fp16", 4))["device"] == "NVIDIA A10"


def test_rebuild_on_request(layout: RunLayout, calls: Path):
    perf(layout, sizes=(4,))
    [record] = perf(layout, sizes=(4,), rebuild=True)
    assert record.extra["engine_reason"] == "rebuild asked for"


def test_fp32_and_int8(layout: RunLayout, calls: Path):
    [fp32] = perf(layout, sizes=(16,), precision="fp32")
    assert fp32.platform == "T4-trt-fp32"
    assert not [a for a in read_calls(calls)[-1] if a in ("--fp16", "--int8")]
    with pytest.raises(PcbError, match=r"calibration cache .* is missing: run `python -m pcb trt-"):
        perf(layout, sizes=(16,), precision="int8")
    cache = calibration_cache_path(layout)
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"TRT-100001-EntropyCalibration2\n")
    [int8] = perf(layout, sizes=(16,), precision="int8")
    argv = read_calls(calls)[-1]
    assert "--int8" in argv and f"--calib={cache}" in argv
    assert int8.platform == "T4-trt-int8"
    assert int8.latency.mean_ms < fp32.latency.mean_ms
    assert read_record(engine_path(layout, "int8", 16))["spec"]["calib_md5"]
    assert layout.perf_path("tensorrt-int8").is_file()


def test_trtexec_failure_names_the_log_and_leaves_no_engine(layout, calls, monkeypatch):
    monkeypatch.setenv("TRTEXEC_DOUBLE_FAIL", "1")
    with pytest.raises(
        PcbError, match=r"(?s)exit status 1.*stand-in failure.*full log: .*command: "
    ):
        perf(layout, sizes=(1,))
    folder = engine_path(layout, "fp16", 1).parent
    assert not folder.exists() or not list(folder.iterdir())
    assert not layout.perf_path("tensorrt-fp16").exists()


def test_cross_check_warns_and_strict_fails(layout, calls, monkeypatch, capsys):
    monkeypatch.setenv("TRTEXEC_DOUBLE_QPS", "0.5")
    [record] = perf(layout, sizes=(32,))
    assert record.extra["cross_check"]["status"] == "warn"
    assert "GPU sat idle" in capsys.readouterr().err
    with pytest.raises(PcbError, match=r"checks failed \(--strict\).*records are written"):
        perf(layout, sizes=(32,), strict=True)
    assert layout.perf_path("tensorrt-fp16").is_file()


def test_tensorrt_11_is_refused(layout, calls, monkeypatch):
    monkeypatch.setenv("TRTEXEC_DOUBLE_VERSION", "11.0.0")
    with pytest.raises(PcbError, match=r"TensorRT 11\.0\.0: TensorRT 11 dropped trtexec's --calib"):
        perf(layout, sizes=(1,))


def test_missing_pieces(layout: RunLayout, tmp_path: Path):
    with pytest.raises(PcbError, match="not on the PATH: run this stage in the tensorrt image"):
        run_trt_perf(layout, batch_sizes=(1,), trtexec="no-such-trtexec", quiet=True)
    with pytest.raises(PcbError, match="ONNX model not found"):
        perf(RunLayout(tmp_path / "empty"))
    with pytest.raises(PcbError, match="positive integers"):
        perf(layout, sizes=())


def test_version_comes_from_the_probe(layout: RunLayout):
    """A runner stand-in: any program's output through the same parsing."""
    seen = []

    def runner(argv):
        seen.append(argv)
        if argv[0] == "nvidia-smi":  # asked only where the host has one
            return Completed(0, "Tesla T4\n")
        if argv[1:] == ["--help"]:
            return Completed(0, "&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --help\n")
        engine = next(a.split("=", 1)[1] for a in argv if a.startswith("--saveEngine="))
        Path(engine).write_bytes(b"plan")
        fixture = Path(__file__).parent / "fixtures/real/trtexec/tensorrt8_6_t4_bs32_fp16.txt"
        return Completed(0, fixture.read_text())

    [record] = run_trt_perf(layout, batch_sizes=(32,), trtexec="/x/trtexec", runner=runner)
    assert record.tool_version == "8.6.1"
    assert round(record.images_per_s, 2) == 1554.99
    # This runner wrote no --exportTimes JSON: the printed summary is the fallback.
    assert record.extra["timing_source"] == "printed summary"
    assert "json_vs_printed" not in record.extra
    build = next(argv for argv in seen if any(a.startswith("--saveEngine=") for a in argv))
    assert any(a.startswith("--exportTimes=") for a in build)
    assert read_record(engine_path(layout, "fp16", 32))["spec"]["tensorrt_version"] == "8.6.1"


def built_argv(calls: Path) -> list[str]:
    return next(a for a in read_calls(calls) if any(x.startswith("--saveEngine=") for x in a))


@pytest.mark.parametrize(
    ("version", "build_only", "workspace"),
    [
        # The double takes only what the real --help of that version lists.
        ("8.2.1", "--buildOnly", "--workspace=2048"),
        ("8.6.1", "--skipInference", "--memPoolSize=workspace:2048"),
        ("10.0.1", "--skipInference", "--memPoolSize=workspace:2048"),
        ("10.16.1", "--skipInference", "--memPoolSize=workspace:2048"),
    ],
)
def test_flags_follow_the_version_trtexec_reports(
    layout, calls, monkeypatch, version, build_only, workspace
):
    monkeypatch.setenv("TRTEXEC_DOUBLE_VERSION", version)
    [record] = perf(layout, sizes=(8,), workspace_mib=2048)
    assert record.tool_version == version
    assert workspace in built_argv(calls)
    assert record.extra["timing_source"] == "exportTimes"
    assert record.extra["json_vs_printed"]["status"] == "ok"
    add_bins(layout)
    infer(layout, batch_size=2)
    assert read_calls(calls)[-1][-1] == build_only


def test_tensorrt_8_4_exports_its_warm_up_queries_too(layout, calls, monkeypatch):
    # Up to 8.4 exportJSONTrace wrote every query; trtexec's own summary skipped the warm-up.
    monkeypatch.setenv("TRTEXEC_DOUBLE_VERSION", "8.4.1")
    [record] = perf(layout, sizes=(16,), timing=TimingOptions(warmup_ms=300))
    assert record.extra["warmups_dropped"] > 0 and record.extra["warmup_ms"] == 300.0
    assert record.extra["json_vs_printed"]["status"] == "ok"
    assert "--warmUp=300" in built_argv(calls)
    assert record.extra["percentiles_ms"].keys() == {"90", "95", "99"}


def test_tensorrt_8_0_writes_its_version_packed(layout, calls, monkeypatch):
    monkeypatch.setenv("TRTEXEC_DOUBLE_VERSION", "8.0.3")
    [record] = perf(layout, sizes=(4,))
    assert record.tool_version == "8.0.3"  # `TensorRT version: 8003` in its log
    assert "--buildOnly" not in built_argv(calls)


def test_tensorrt_7_needs_its_python_package_for_the_version(layout, calls, monkeypatch):
    monkeypatch.setenv("TRTEXEC_DOUBLE_VERSION", "7.2.3")
    monkeypatch.setattr(tools, "_package_version", lambda: None)
    with pytest.raises(PcbError, match=r"printed no TensorRT version \(trtexec before 8\.0"):
        perf(layout, sizes=(4,))
    monkeypatch.setattr(tools, "_package_version", lambda: ("tensorrt", "7.2.3.4"))
    [record] = perf(layout, sizes=(4,))
    # TensorRT 7's JSON (In/Out names) is read; its text has no usable Throughput.
    assert record.extra["timing_source"] == "exportTimes"
    assert record.extra["json_vs_printed"]["status"] == "ok"
    assert record.tool_version == "7.2.3"
    add_bins(layout)
    infer(layout, batch_size=2)
    assert read_calls(calls)[-1][-1] == "--buildOnly"


def test_a_json_of_another_run_is_caught(layout, calls, monkeypatch, capsys):
    monkeypatch.setenv("TRTEXEC_DOUBLE_SKEW_JSON", "1.05")
    [record] = perf(layout, sizes=(8,))
    agreement = record.extra["json_vs_printed"]
    assert agreement["status"] == "mismatch" and agreement["largest_difference"] > 0.04
    assert "disagree on" in capsys.readouterr().err
    # The figures are the JSON's.
    assert record.latency.mean_ms == pytest.approx((0.55 + 0.62 * 8) * 1.05, rel=0.01)
    with pytest.raises(PcbError, match=r"checks failed \(--strict\).*disagree on"):
        perf(layout, sizes=(8,), strict=True)


def test_a_stale_json_is_not_reused(layout, calls, monkeypatch):
    perf(layout, sizes=(4,))
    times = perf_log_dir(layout, "fp16") / "trtexec_bs4.times.json"
    times.write_text("[]")  # what an interrupted earlier run could leave
    [record] = perf(layout, sizes=(4,))
    assert record.extra["timing_source"] == "exportTimes"
    assert record.iterations > 0


def test_layer_profile_in_a_separate_run(layout, calls, monkeypatch):
    [record] = perf(layout, sizes=(8,), profile=True)
    argv = built_argv(calls)
    assert "--separateProfileRun" in argv
    assert any(
        a.startswith("--exportProfile=") and a.endswith("trtexec_bs8.profile.json") for a in argv
    )
    profile = record.extra["layer_profile"]
    assert profile["layers"] == 3 and profile["slowest"][0]["name"] == "layer4 conv"
    assert record.extra["json_vs_printed"]["status"] == "ok"


def test_an_unlisted_flag_is_refused_before_running(layout, calls, monkeypatch):
    monkeypatch.setenv("TRTEXEC_DOUBLE_VERSION", "8.2.1")
    timing = TimingOptions(extra=("--useSpinWait", "--noSuchFlag"))
    with pytest.raises(PcbError, match=r"TensorRT 8\.2\.1 does not list --noSuchFlag"):
        perf(layout, sizes=(1,), timing=timing)
    assert read_calls(calls) == []  # nothing but the --help probe ran


# ---- trt-infer -------------------------------------------------------------------------------


class FakeBackend(Backend):
    name = "tensorrt"
    loads: list = []

    def __init__(self, device: int = 0) -> None:
        self.device = device

    def load(self, model_path, batch_size=None, threads=0):
        FakeBackend.loads.append((Path(model_path), batch_size, self.device))

    def run(self, batch: np.ndarray) -> np.ndarray:
        # Each image's feature: its mean, so dumps are checkable per image.
        means = batch.reshape(len(batch), -1).mean(axis=1)
        return np.broadcast_to(means[:, None, None, None], (len(batch), *FEATURE_SHAPE)).copy()

    def version(self) -> str:
        return "10.0.1"


def infer(layout: RunLayout, **kwargs):
    FakeBackend.loads = []
    return run_trt_infer(
        layout, trtexec=str(DOUBLE), backend_factory=FakeBackend, quiet=True, **kwargs
    )


def test_infer_writes_dumps_in_the_shared_layout(layout: RunLayout, calls: Path):
    add_bins(layout)
    counts = infer(layout, batch_size=4)
    assert counts == {"query": 3, "gallery": 7}
    engine = engine_path(layout, "fp16", 4)
    assert FakeBackend.loads == [(engine, 4, 0)]
    [build] = read_calls(calls)
    assert build[-1] == "--skipInference"
    for split, stems in STEMS.items():
        folder = layout.dumps_dir("tensorrt-fp16", split)
        paths = find_dumps(folder, stems)  # what `pcb evaluate` reads
        assert [p.name for p in paths] == [f"{s}_0.bin" for s in stems]
        assert all(p.stat().st_size == FEATURE_BYTES for p in paths)
        record = read_json(infer_record_path(layout, "tensorrt-fp16", split))
        assert record["complete"] and record["backend"] == "tensorrt-fp16"
        assert record["count"] == len(stems) and record["engine"] == str(engine)
        assert record["backend_version"] == "10.0.1" and record["precision"] == "fp16"
    stem = STEMS["query"][1]
    image = np.fromfile(layout.bins_dir("query") / f"{stem}.bin", dtype=np.float32)
    dump = np.fromfile(layout.dumps_dir("tensorrt-fp16", "query") / f"{stem}_0.bin", np.float32)
    assert dump[0] == pytest.approx(image.mean(), rel=1e-5)

    infer(layout, batch_size=4)  # everything current: no build, no load
    assert FakeBackend.loads == [] and len(read_calls(calls)) == 1


def test_infer_reuses_the_engine_perf_timed(layout: RunLayout, calls: Path):
    add_bins(layout)
    perf(layout, sizes=(16,))
    before = len(read_calls(calls))
    infer(layout, batch_size=16)
    assert len(read_calls(calls)) == before  # no second build: the same engine
    assert FakeBackend.loads[0][0] == engine_path(layout, "fp16", 16)


def test_infer_redoes_a_split_when_the_engine_changes(layout: RunLayout, calls: Path):
    add_bins(layout)
    infer(layout, batch_size=2)
    stale = layout.dumps_dir("tensorrt-fp16", "query") / "stale_0.bin"
    stale.write_bytes(b"x")
    layout.onnx_path.write_bytes(b"retrained")
    infer(layout, batch_size=2)
    assert not stale.exists()  # the split was cleared and recomputed
    assert len(FakeBackend.loads) == 1


def test_infer_checks_inputs_first(layout: RunLayout, calls: Path):
    with pytest.raises(PcbError, match="image list not found"):
        infer(layout)
    assert read_calls(calls) == []


# ---- the command line ------------------------------------------------------------------------


def test_cli_runs_the_stage(layout: RunLayout, calls: Path, capsys):
    argv = ["trt-perf", "--run", str(layout.root), "--batch-sizes", "1,8", "--quiet"]
    assert cli.main([*argv, "--trtexec", str(DOUBLE), "--duration", "1", "--threads"]) == 0
    out = capsys.readouterr().out
    assert "T4-trt-fp16 on Tesla T4, TensorRT 10.0.1" in out
    assert "--duration=1" in read_calls(calls)[0] and "--threads" in read_calls(calls)[0]
    assert cli.main([*argv, "--trtexec", "/nonexistent/trtexec"]) == 1
    assert "not found" in capsys.readouterr().err


def test_gpu_name_probe():
    from pcb.tensorrt.tools import gpu_name

    def runner(argv):
        assert argv == ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "--id=1"]
        return Completed(0, "Tesla T4\n")

    assert gpu_name(1, runner, which=lambda name: "/usr/bin/nvidia-smi") == "Tesla T4"
    assert gpu_name(0, runner, which=lambda name: None) == "unknown"
    assert gpu_name(1, lambda argv: Completed(9, "NVML error"), which=lambda n: "x") == "unknown"


@pytest.mark.parametrize(
    ("help_file", "version"),
    [
        ("help_trt8_2_1.txt", "8.2.1"),
        ("help_trt8_6_1.txt", "8.6.1"),
        ("help_trt10_0_1.txt", "10.0.1"),
        ("help_trt10_16_1.txt", "10.16.1"),
    ],
)
def test_probe_reads_the_real_help(help_file, version):
    text = (Path(__file__).parent / "fixtures" / "real" / "trtexec" / help_file).read_text()
    info = tools.probe_trtexec("trtexec", lambda argv: Completed(0, text))
    assert (str(info.version), info.source) == (version, "trtexec --help")
    assert info.help_text == text


def test_probe_refusals(monkeypatch):
    monkeypatch.setattr(tools, "_package_version", lambda: None)

    def probe(output: str):
        return tools.probe_trtexec("/opt/x/trtexec", lambda argv: Completed(0, output))

    with pytest.raises(PcbError, match=r"neither trtexec's banner nor a TensorRT version"):
        probe("usage: something else\n")
    for banner, message in [
        ("[TensorRT v110000]", r"TensorRT 11\.0\.0: TensorRT 11 dropped"),
        ("[TensorRT v6005]", r"TensorRT 6\.0\.5: the flags these stages pass were checked"),
    ]:
        with pytest.raises(PcbError, match=message):
            probe(f"&&&& RUNNING TensorRT.trtexec {banner} # trtexec --help\n")
    # TensorRT 7: no version in the banner, none installed as a package
    with pytest.raises(PcbError, match=r"printed no TensorRT version"):
        probe("&&&& RUNNING TensorRT.trtexec # trtexec --help\n")
