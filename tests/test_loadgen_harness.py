"""LoadGen as the harness: a null backend proves the harness, the tiny model a real backend.

Every test runs the real installed LoadGen (mlcommons-loadgen); only the backend is a
stand-in in the first ones: a function that sleeps and counts what it was given.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pcb.errors import PcbError
from pcb.layout import RunLayout
from pcb.measure import DEFAULT_MIN_DURATION_S, DEFAULT_MIN_QUERIES
from pcb.measure.loadgen_harness import (
    EARLY_STOPPING_MIN_QUERIES,
    LoadGenRules,
    run_scenario,
    warm_up,
)
from pcb.measure.perf_loadgen import (
    BatchMeasurement,
    MeasureSettings,
    input_pool,
    loadgen_table,
    run_perf_loadgen,
    sweep,
)
from pcb.perf import PerfRecord, read_perf_records, timing_of

pytest.importorskip("mlperf_loadgen")

FAST = LoadGenRules(min_duration_ms=150, min_query_count=EARLY_STOPPING_MIN_QUERIES)


class NullBackend:
    """Sleeps `per_image_s` per image and records every batch it was handed."""

    def __init__(self, per_image_s: float = 0.0005) -> None:
        self.per_image_s = per_image_s
        self.batches: list[tuple[int, ...]] = []
        self.threads: set[int] = set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(tuple(batch.shape))
        self.threads.add(threading.get_ident())
        time.sleep(self.per_image_s * len(batch))
        return batch[:, :1]


def _pool(count: int = 16) -> np.ndarray:
    return np.arange(count * 3 * 4 * 2, dtype=np.float32).reshape(count, 3, 4, 2)


def test_offline_runs_every_sample_in_batches(tmp_path: Path) -> None:
    backend = NullBackend()
    run = run_scenario(backend, _pool(), 8, "Offline", FAST, tmp_path / "off", 8 * 0.0005)
    issued = int(run.summary.parameters["samples_per_query"])
    assert sum(shape[0] for shape in backend.batches) == issued
    assert all(shape[0] <= 8 for shape in backend.batches)
    assert all(shape[1:] == (3, 4, 2) for shape in backend.batches)
    assert run.images_per_s == run.summary.samples_per_second
    # The sleep bounds the rate from above: LoadGen cannot have seen more than this.
    assert run.images_per_s <= 1 / 0.0005
    assert run.valid, run.summary.failed_checks()
    assert len(run.batch_ms) == len(backend.batches)
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == [
        "mlperf_log_detail.txt",
        "mlperf_log_summary.txt",
    ]
    assert run.loadgen_version


def test_single_stream_query_is_one_whole_batch(tmp_path: Path) -> None:
    backend = NullBackend(per_image_s=0.0005)
    run = run_scenario(backend, _pool(), 4, "SingleStream", FAST, tmp_path / "ss", 0.002)
    assert {shape[0] for shape in backend.batches} == {4}
    assert run.summary.scenario == "SingleStream"
    assert run.summary.percentile_ms(50) >= 4 * 0.0005 * 1000
    queries = len(backend.batches)
    assert queries >= EARLY_STOPPING_MIN_QUERIES
    assert run.images_per_s == pytest.approx(4 * run.summary.qps_without_overhead)
    assert run.valid, run.summary.failed_checks()


def test_too_few_single_stream_queries_is_invalid_by_loadgen(tmp_path: Path) -> None:
    rules = LoadGenRules(min_duration_ms=20, min_query_count=5)
    run = run_scenario(NullBackend(0.001), _pool(), 1, "SingleStream", rules, tmp_path, 0.001)
    assert not run.valid
    assert "early_stopping" in run.summary.failed_checks()


def test_an_expected_rate_far_too_low_ends_offline_early_and_invalid(tmp_path: Path) -> None:
    # Told a batch takes 1 s, LoadGen issues ~2 samples for a 1 s minimum: done in 1 ms.
    rules = LoadGenRules(min_duration_ms=1000, min_query_count=1)
    run = run_scenario(NullBackend(0.0005), _pool(), 2, "Offline", rules, tmp_path / "x", 1.0)
    assert not run.valid
    assert run.summary.failed_checks() == ["min_duration"]
    assert run.summary.recommendations


def test_a_failing_backend_raises_after_loadgen_ends_and_leaves_no_log(tmp_path: Path) -> None:
    def broken(batch: np.ndarray) -> None:
        raise ValueError("backend exploded")

    with pytest.raises(ValueError, match="backend exploded"):
        run_scenario(broken, _pool(), 2, "Offline", FAST, tmp_path / "logs", 0.001)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PcbError, match="scenario"):
        run_scenario(NullBackend(), _pool(), 1, "Server", FAST, tmp_path, 0.01)
    with pytest.raises(PcbError, match="batch size"):
        run_scenario(NullBackend(), _pool(), 0, "Offline", FAST, tmp_path, 0.01)
    with pytest.raises(PcbError, match="expected batch time"):
        run_scenario(NullBackend(), _pool(), 1, "Offline", FAST, tmp_path, 0.0)
    with pytest.raises(PcbError, match="LoadGen rules"):
        LoadGenRules(min_duration_ms=-1, min_query_count=1)
    with pytest.raises(PcbError, match="scenario"):
        MeasureSettings(rules=FAST, scenarios=("Server",))
    with pytest.raises(PcbError, match="repeats"):
        MeasureSettings(rules=FAST, repeats=0)


def test_loadgen_defaults_are_read_from_loadgen() -> None:
    import mlperf_loadgen as lg

    rules = LoadGenRules.loadgen_defaults()
    assert rules.min_duration_ms == lg.TestSettings().min_duration_ms
    assert rules.min_query_count == lg.TestSettings().min_query_count
    assert LoadGenRules.quick().min_query_count == EARLY_STOPPING_MIN_QUERIES
    # The perf stage's defaults (invoke.yaml, --min-duration, --min-queries) are LoadGen's.
    assert rules.min_duration_ms == DEFAULT_MIN_DURATION_S * 1000
    assert rules.min_query_count == DEFAULT_MIN_QUERIES


def test_a_slow_estimate_is_corrected_as_loadgen_advises(tmp_path: Path) -> None:
    from pcb.measure.loadgen_harness import short_of_duration

    rules = LoadGenRules(min_duration_ms=300, min_query_count=1)
    backend = NullBackend(0.0005)
    run = run_scenario(backend, _pool(), 2, "Offline", rules, tmp_path / "a", 0.5)
    assert short_of_duration(run, 0.5)
    assert not short_of_duration(run, 0.0001)  # it ran slower than told: not this failure
    settings = MeasureSettings(rules=rules, repeats=1, scenarios=("Offline",), warmup=0)
    (measured,) = sweep(backend, _pool(), [2], settings, tmp_path / "b")
    # No warm-up: LoadGen's default expectation (1 QPS) is far too slow; rerunning with what
    # was measured fixes it (more than once when a loaded machine made the estimate short).
    assert 1 <= measured.reruns <= 3
    assert measured.valid


def test_warm_up_runs_untimed_batches_and_reports_the_fastest() -> None:
    backend = NullBackend(0.001)
    last = warm_up(backend, _pool(), 3, 2)
    assert backend.batches == [(3, 3, 4, 2)] * 2
    assert last is not None and last >= 0.003
    assert warm_up(backend, _pool(), 3, 0) is None


def test_sweep_repeats_offline_and_judges_the_spread(tmp_path: Path) -> None:
    backend = NullBackend(0.0003)
    settings = MeasureSettings(rules=FAST, repeats=3, single_stream_batch_sizes=(1,))
    lines: list[str] = []
    measured = sweep(backend, _pool(), [1, 4], settings, tmp_path, progress=lines.append)
    assert [m.batch_size for m in measured] == [1, 4]
    first, second = measured
    assert len(first.offline) == 3 and first.single_stream is not None
    assert len(second.offline) == 3 and second.single_stream is None
    assert first.throughput is not None
    assert first.throughput.values == tuple(r.images_per_s for r in first.offline)
    assert first.images_per_s == first.throughput.median
    assert first.load is not None and first.load.before is not None
    # Batch 4 ran no SingleStream: its latency is every Offline batch's own time.
    latency = second.latency()
    assert latency.p90_ms is not None
    assert latency.median_ms >= 4 * 0.0003 * 1000
    assert "SingleStream" in first.timed() and "time.perf_counter" in second.timed()
    assert len(lines) == 2 and "batch 1:" in lines[0]
    assert sorted(p.name for p in (tmp_path / "bs1").iterdir()) == [
        "Offline-1",
        "Offline-2",
        "Offline-3",
        "SingleStream",
    ]


def test_batch_measurement_with_nothing_measured_says_so() -> None:
    with pytest.raises(PcbError, match="nothing was measured"):
        _ = BatchMeasurement(4).images_per_s


def test_input_pool_prefers_the_runs_images(tmp_path: Path) -> None:
    from pcb.constants import INPUT_SHAPE

    image = np.full(INPUT_SHAPE, 0.5, dtype=np.float32)
    (tmp_path / "a.bin").write_bytes(image.tobytes())
    (tmp_path / "short.bin").write_bytes(b"123")
    pool, described = input_pool([tmp_path / "a.bin", tmp_path / "short.bin"])
    assert pool.shape == (1, *INPUT_SHAPE) and float(pool.mean()) == 0.5
    assert "1 preprocessed" in described
    pool, described = input_pool([], count=2)
    assert pool.shape == (2, *INPUT_SHAPE) and "random" in described


def _tiny_run(tmp_path: Path) -> RunLayout:
    from tiny_model import make_tiny_model

    layout = RunLayout(tmp_path / "run")
    make_tiny_model(layout.onnx_path)
    return layout


def test_perf_stage_with_loadgen_on_a_real_onnxruntime_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = _tiny_run(tmp_path)
    settings = MeasureSettings(rules=FAST, repeats=2, single_stream_batch_sizes=(1,))
    records = run_perf_loadgen(layout, "onnxruntime", [1, 2], settings, threads=1, quiet=True)
    assert [r.batch_size for r in records] == [1, 2]
    saved = read_perf_records(layout.perf_path("onnxruntime"))
    assert [r.to_dict() for r in saved] == json.loads(json.dumps([r.to_dict() for r in records]))
    first = saved[0]
    assert first.platform == "cpu-onnxruntime-fp32"
    assert first.timer.startswith("mlperf-loadgen ")
    assert first.tool == "onnxruntime"
    timed, timer = timing_of(first)
    assert "LoadGen Offline" in timed and "SingleStream" in timed and timer == first.timer
    assert first.repeats == 2 and first.cv is not None and first.stable is not None
    assert first.load_before is not None and first.load_after is not None
    assert isinstance(first.loadgen_valid, bool)
    summaries = first.extra["loadgen"]
    assert len(summaries["offline"]) == 2
    offline = summaries["offline"][0]["summary"]
    assert offline["scenario"] == "Offline" and offline["samples_per_second"] > 0
    assert summaries["single_stream"]["summary"]["scenario"] == "SingleStream"
    assert saved[1].extra["loadgen"]["single_stream"] is None
    assert first.extra["measurement"]["rules"]["min_duration_ms"] == 150
    logs = layout.perf_path("onnxruntime").parent / "loadgen" / "onnxruntime"
    assert (logs / "bs2" / "Offline-2" / "mlperf_log_summary.txt").is_file()
    out = capsys.readouterr().out
    assert "timed by LoadGen" in out and "p90 ms" in out

    # The same measurement asked again on the same host is kept, not repeated.
    again = run_perf_loadgen(layout, "onnxruntime", [1, 2], settings, threads=1, quiet=True)
    assert again == saved
    assert "kept:" in capsys.readouterr().out
    # Other rules measure again.
    other = MeasureSettings(rules=FAST, repeats=1, scenarios=("Offline",))
    remeasured = run_perf_loadgen(layout, "onnxruntime", [1, 2], other, threads=1, quiet=True)
    assert remeasured[0].repeats == 1 and remeasured[0].extra["loadgen"]["single_stream"] is None


def test_loadgen_perf_of_one_batch_size_replaces_that_size_only(tmp_path: Path) -> None:
    """Issue 14's merge holds for LoadGen's records too: batch 2 measured again replaces batch
    2 only; asked again unchanged, batch 2 alone is kept from the merged file."""
    layout = _tiny_run(tmp_path)
    settings = MeasureSettings(rules=FAST, repeats=1, scenarios=("Offline",))
    first = run_perf_loadgen(layout, "onnxruntime", [1, 2], settings, threads=1, quiet=True)
    again = run_perf_loadgen(
        layout, "onnxruntime", [2], settings, threads=1, quiet=True, force=True
    )
    stored = read_perf_records(layout.perf_path("onnxruntime"))
    assert [r.batch_size for r in stored] == [1, 2]

    def as_written(record: PerfRecord) -> dict:
        return json.loads(json.dumps(record.to_dict()))

    assert stored[0].to_dict() == as_written(first[0])
    assert stored[1].to_dict() == as_written(again[0])
    assert stored[1].extra["timestamp"] >= first[1].extra["timestamp"]
    kept = run_perf_loadgen(layout, "onnxruntime", [2], settings, threads=1, quiet=True)
    assert kept == [stored[1]]


def test_table_marks_invalid_and_unstable(tmp_path: Path) -> None:
    from dataclasses import replace

    layout = _tiny_run(tmp_path)
    settings = MeasureSettings(rules=FAST, repeats=2, scenarios=("Offline",))
    (record,) = run_perf_loadgen(layout, "onnxruntime", [1], settings, threads=1, quiet=True)
    shown = loadgen_table([replace(record, stable=False, loadgen_valid=False)])
    assert shown.splitlines()[-1].split()[3] == "NO" and shown.splitlines()[-1].split()[-1] == "NO"


def test_the_perf_stage_command_measures_with_loadgen_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pcb.cli.main import main

    layout = _tiny_run(tmp_path)
    run = str(layout.root)
    rules = ["--min-duration", "0.15", "--min-queries", "4", "--repeats", "2", "--warmup", "2"]
    assert main(["perf", "--run", run, "--batch-sizes", "1,2", *rules, "--quiet"]) == 0
    records = read_perf_records(layout.perf_path("onnxruntime"))
    assert [r.batch_size for r in records] == [1, 2]
    assert all(r.timer.startswith("mlperf-loadgen ") and r.repeats == 2 for r in records)
    measurement = records[0].extra["measurement"]
    assert measurement["rules"]["min_duration_ms"] == 150
    assert measurement["rules"]["min_query_count"] == 4 and measurement["warmup"] == 2
    assert records[0].extra["loadgen"]["single_stream"]["summary"]["scenario"] == "SingleStream"
    assert "timed by LoadGen" in capsys.readouterr().out

    # --timer fixed: the fixed number of batches, timed by this process.
    fixed = ["--timer", "fixed", "--iterations", "2", "--force", "--quiet"]
    assert main(["perf", "--run", run, "--batch-sizes", "1", *fixed]) == 0
    (record,) = read_perf_records(layout.perf_path("onnxruntime"))
    assert record.iterations == 2 and record.timer == "" and record.loadgen_valid is None
