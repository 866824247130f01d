"""The whole CPU path on the demo data, through the command line, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcb.cli.main import main
from pcb.dataset import load_split
from pcb.evaluate import evaluate_features, load_features
from pcb.layout import RunLayout

pytestmark = pytest.mark.slow

IDENTITIES = 24
# LoadGen's rules shortened to keep the test short (its defaults: 10 s, 100 queries).
QUICK_LOADGEN = ["--min-duration", "0.5", "--min-queries", "8", "--repeats", "2"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunLayout]:
    root = tmp_path_factory.mktemp("demo")
    data, run = root / "data", root / "results" / "demo"
    dataset = data / "Market-1501-v15.09.15"
    steps = [
        ["demo-data", "--out", str(data), "--identities", str(IDENTITIES)],
        ["export", "--checkpoint", str(data / "PCB_demo.pt"), "--run", str(run)],
        ["preprocess", "--dataset", str(dataset), "--run", str(run), "--quiet"],
        ["infer", "--run", str(run), "--batch-size", "8", "--quiet"],
        ["evaluate", "--dataset", str(dataset), "--run", str(run)],
        ["perf", "--run", str(run), "--batch-sizes", "1,2", *QUICK_LOADGEN, "--quiet"],
        ["report", "--run", str(run)],
    ]
    for argv in steps:
        assert main(argv) == 0, argv
    return dataset, RunLayout(run)


def test_demo_accuracy_is_far_above_chance(demo_run):
    _, layout = demo_run
    result = json.loads(layout.eval_path("onnxruntime").read_text())
    chance = 1 / result["num_gallery_ids"]
    assert result["synthetic"] is True
    assert result["num_valid_queries"] == result["num_query"] == 2 * IDENTITIES
    assert result["top1"] > 10 * chance
    assert result["top1"] <= result["top5"] <= result["top10"]


def _features(dataset: Path, layout: RunLayout):
    records = {split: load_split(dataset, split) for split in ("query", "gallery")}
    features = {
        split: load_features(layout.dumps_dir("onnxruntime", split), records[split])
        for split in records
    }
    return records, features


def test_shuffled_pids_fall_to_chance(demo_run):
    dataset, layout = demo_run
    records, features = _features(dataset, layout)
    rng = np.random.default_rng(0)
    gallery = records["gallery"]
    shuffled = [gallery[i] for i in rng.permutation(len(gallery))]
    # Features stay in place while the identities move: the pipeline mixing up file order.
    mixed = evaluate_features(features["query"], features["gallery"], records["query"], shuffled)
    honest = evaluate_features(
        features["query"], features["gallery"], records["query"], records["gallery"]
    )
    chance = 1 / len({r.pid for r in gallery})
    assert honest.top(1) > 10 * chance
    assert mixed.top(1) < 4 * chance


def test_report_labels_the_demo(demo_run):
    _, layout = demo_run
    report = json.loads(layout.report_json.read_text())
    assert report["demo"] is True
    assert report["accuracy"]["onnxruntime"]["passed"] is None
    markdown = layout.report_md.read_text()
    assert "not comparable" in markdown
    throughput = report["throughput"]["cpu-onnxruntime-fp32"]
    assert throughput["best"]["batch_size"] in (1, 2)


def test_rerun_reuses_finished_work(demo_run, capsys):
    dataset, layout = demo_run
    dump = next(layout.dumps_dir("onnxruntime", "query").iterdir())
    before = dump.stat().st_mtime_ns
    run = str(layout.root)
    assert main(["preprocess", "--dataset", str(dataset), "--run", run, "--quiet"]) == 0
    assert main(["infer", "--run", run, "--quiet"]) == 0
    assert dump.stat().st_mtime_ns == before


def test_loadgen_summary_is_in_the_perf_records(demo_run):
    from pcb.perf import read_perf_records

    _, layout = demo_run
    records = read_perf_records(layout.perf_path("onnxruntime"))
    assert [r.batch_size for r in records] == [1, 2]
    for record in records:
        assert record.timer.startswith("mlperf-loadgen") and record.repeats == 2
        assert record.stable is not None and record.cv is not None
        assert record.load_before and record.load_after
        offline = record.extra["loadgen"]["offline"]
        assert [run["summary"]["scenario"] for run in offline] == ["Offline", "Offline"]
        assert all(run["summary"]["samples_per_second"] > 0 for run in offline)
    single = records[0].extra["loadgen"]["single_stream"]["summary"]
    assert single["scenario"] == "SingleStream" and "99.00" in single["percentiles_ns"]
    report = json.loads(layout.report_json.read_text())
    entry = report["throughput"]["cpu-onnxruntime-fp32"]
    assert entry["timing"] == "wall (LoadGen)" and "LoadGen Offline" in entry["timed"]
