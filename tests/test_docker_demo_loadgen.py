"""`invoke full --demo` in the stage containers: the perf stage measures with MLPerf LoadGen
inside the runtime image, and LoadGen's summaries reach the perf records and the report.

Marked slow and docker: it builds the export and runtime images when their content tags are
missing (minutes), then runs every stage in its container (about 5 minutes on 2 cores).
Run it under `flock /tmp/pcb-docker.lock` on a shared engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.layout import RunLayout
from pcb.perf import read_perf_records

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def engine() -> None:
    from pcb.orchestration.docker_executor import connect

    try:
        connect(timeout=30)
    except PcbError as error:
        pytest.skip(f"no Docker engine: {error}")


def test_full_demo_in_containers_measures_with_loadgen(
    engine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pcb.orchestration.commands import run_full
    from pcb.orchestration.images import PROJECT_ROOT
    from pcb.orchestration.settings import project_config, settings_from_config

    # The demo's data/ and results/ folders are relative to the working directory.
    monkeypatch.chdir(tmp_path)
    settings = settings_from_config(
        project_config(PROJECT_ROOT),
        demo=True,
        executor="docker",
        demo_identities=4,
        batch_sizes="1,2",
        # LoadGen's rules shortened to keep the test short (its defaults: 10 s, 100 queries).
        perf_min_duration=0.5,
        perf_min_queries=8,
        perf_repeats=2,
        quiet=True,
    )
    run_full(settings)

    layout = RunLayout(tmp_path / "results" / "demo")
    records = read_perf_records(layout.perf_path("onnxruntime"))
    assert [r.batch_size for r in records] == [1, 2]
    for record in records:
        assert record.timer.startswith("mlperf-loadgen 6.")
        assert record.repeats == 2 and record.cv is not None and record.stable is not None
        assert record.load_before and record.load_after
        assert isinstance(record.loadgen_valid, bool)
        offline = record.extra["loadgen"]["offline"]
        assert [run["summary"]["scenario"] for run in offline] == ["Offline", "Offline"]
        assert all(run["summary"]["samples_per_second"] > 0 for run in offline)
        # Inside the container: the log folder is the container's view of the run.
        assert all(run["log_dir"].startswith("/results/demo/perf/loadgen/") for run in offline)
    single = records[0].extra["loadgen"]["single_stream"]["summary"]
    assert single["scenario"] == "SingleStream" and "99.00" in single["percentiles_ns"]
    logs = layout.root / "perf" / "loadgen" / "onnxruntime" / "bs1"
    assert (logs / "SingleStream" / "mlperf_log_summary.txt").is_file()
    report = json.loads(layout.report_json.read_text())
    entry = report["throughput"]["cpu-onnxruntime-fp32"]
    assert entry["timing"] == "wall (LoadGen)"
    assert "timed" in layout.report_md.read_text()
