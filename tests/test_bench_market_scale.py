"""The Market-scale pipeline benchmark: its arithmetic, its samplers, and one tiny real run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcb.bench.common import BenchConfig
from pcb.bench.market_scale import (
    FULL_IMAGES,
    ScaleRun,
    StageRun,
    bench_market_scale,
    disk_bytes,
    extrapolate,
    fit_stages,
    run_stage,
    tree_rss_bytes,
)
from pcb.errors import PcbError


def _run(images: int, export: float, infer: float, best: float = 20.0) -> ScaleRun:
    return ScaleRun(
        scale=images / FULL_IMAGES,
        images=images,
        stages=[StageRun("export", export, 1), StageRun("infer", infer, 2)],
        best_images_per_s=best,
        best_batch=8,
        peak_disk_bytes=images * 1000,
        bins_bytes=0,
        dataset_seconds=0.0,
    )


def test_two_scales_separate_fixed_from_per_image_costs() -> None:
    # export: 10 s whatever the size; infer: 2 s + 0.05 s per image.
    runs = [_run(100, 10.0, 2 + 0.05 * 100), _run(300, 10.0, 2 + 0.05 * 300)]
    fits = fit_stages(runs)
    assert fits["export"] == pytest.approx((10.0, 0.0))
    assert fits["infer"] == pytest.approx((2.0, 0.05))
    estimate = extrapolate(runs, ranking_s=0.0)
    assert estimate["infer"] == pytest.approx(2 + 0.05 * FULL_IMAGES)
    assert estimate["wall_s"] == pytest.approx(12 + 0.05 * FULL_IMAGES)
    assert estimate["lower_bound_s"] == pytest.approx(FULL_IMAGES / 20.0)
    assert estimate["ratio"] == pytest.approx(estimate["wall_s"] / estimate["lower_bound_s"])


def test_ranking_at_full_size_is_added_to_evaluation() -> None:
    runs = [
        ScaleRun(0.1, 100, [StageRun("evaluate", 1.0, 0)], 10.0, 1, 0, 0, 0.0),
        ScaleRun(0.3, 300, [StageRun("evaluate", 1.2, 0)], 10.0, 1, 0, 0, 0.0),
    ]
    with_ranking = extrapolate(runs, ranking_s=5.0)
    assert with_ranking["evaluate"] == pytest.approx(extrapolate(runs, 0.0)["evaluate"] + 5.0)


def test_a_stage_faster_at_the_larger_scale_gets_no_negative_slope() -> None:
    fits = fit_stages([_run(100, 12.0, 5.0), _run(300, 10.0, 15.0)])
    assert fits["export"][1] == 0.0 and fits["export"][0] == pytest.approx(12.0)


def test_a_stage_only_the_largest_run_had_is_fitted_through_it_alone() -> None:
    small = _run(100, 10.0, 2 + 0.05 * 100)
    large = _run(300, 10.0, 2 + 0.05 * 300)
    large.stages.append(StageRun("perf", 60.0, 3))
    fits = fit_stages([small, large])
    assert fits["infer"] == pytest.approx((2.0, 0.05))
    assert fits["perf"] == pytest.approx((0.0, 0.2))
    # perf is a measuring stage: not in the wall time, whatever its fit.
    assert extrapolate([small, large], 0.0)["wall_s"] == pytest.approx(12 + 0.05 * FULL_IMAGES)


def test_one_scale_counts_everything_per_image() -> None:
    fits = fit_stages([_run(100, 10.0, 5.0)])
    assert fits["export"] == (0.0, 0.1)


def test_scale_run_ratio() -> None:
    run = _run(200, 5.0, 15.0, best=20.0)
    assert run.wall_s == 20.0 and run.lower_bound_s == 10.0 and run.ratio == 2.0
    assert run.to_dict()["ratio"] == 2.0
    # perf runs as long as its own rules say, whatever the data: timed, not in the wall time.
    run.stages.append(StageRun("perf", 300.0, 3))
    assert run.wall_s == 20.0
    estimate = extrapolate([run], ranking_s=0.0)
    assert estimate["perf"] == pytest.approx(300.0 / 200 * FULL_IMAGES)
    assert estimate["wall_s"] == pytest.approx(20.0 / 200 * FULL_IMAGES)


def test_disk_bytes_counts_allocated_blocks(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"\1" * 100_000)
    (tmp_path / "y.bin").write_bytes(b"\1" * 10)
    used = disk_bytes(tmp_path)
    assert used >= 100_010
    assert disk_bytes(tmp_path / "absent") == 0


def test_tree_rss_counts_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "b = bytearray(200 * 2**20); import time; time.sleep(5)"]
    )
    try:
        deadline = time.time() + 4
        seen = 0
        while time.time() < deadline and seen < 200 * 2**20:
            seen = tree_rss_bytes(os.getpid())
            time.sleep(0.1)
        assert seen >= 200 * 2**20
    finally:
        child.kill()
        child.wait()


def test_a_stage_peak_between_samples_is_seen(tmp_path: Path) -> None:
    # 200 MB held for a moment between idle spells, then freed: the RSS at the samples is
    # small (read that way, 13 MB in 5 of 5 runs), the process's own high-water mark is not.
    script = (
        "import time; time.sleep(0.6)\n"
        "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); del b\n"
        "time.sleep(0.6)"
    )
    seconds, peak = run_stage([sys.executable, "-c", script], tmp_path, tmp_path / "log.txt")
    assert peak >= 200 * 2**20


def test_a_failing_stage_is_named_with_its_output(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('bad things'); raise SystemExit(3)"]
    with pytest.raises(PcbError, match=r"(?s)exit 3.*bad things"):
        run_stage(command, tmp_path, tmp_path / "log.txt")
    seconds, peak = run_stage([sys.executable, "-c", "pass"], tmp_path, tmp_path / "log.txt")
    assert seconds > 0 and peak >= 0


def test_scales_out_of_range_are_refused(tmp_path: Path) -> None:
    config = BenchConfig(quick=True, market_scales=(0.0,))
    with pytest.raises(PcbError, match="market scales"):
        bench_market_scale(config, tmp_path)


@pytest.mark.slow
def test_tiny_real_pipeline(tmp_path: Path) -> None:
    """The real stages, as processes, at two tiny scales and a two-batch perf sweep."""
    config = BenchConfig(quick=True, threads=2, market_scales=(0.002, 0.004))
    overrides = {"batch_sizes": (1, 2), "perf_timer": "fixed", "perf_iterations": 1}
    overrides["infer_batch_size"] = 4
    result = bench_market_scale(config, tmp_path, overrides=overrides)
    runs = result.details["scales"]
    assert [r["scale"] for r in runs] == [0.002, 0.004]
    # perf runs once, at the largest scale; the smaller one uses its best images/s.
    stages = [s["stage"] for s in runs[1]["stages"]]
    assert stages == ["export", "preprocess", "infer", "evaluate", "perf", "report"]
    assert "perf" not in [s["stage"] for s in runs[0]["stages"]]
    assert runs[0]["best_images_per_s"] == runs[1]["best_images_per_s"]
    assert all(s["peak_rss_bytes"] > 10 * 2**20 for s in runs[0]["stages"])
    assert runs[1]["images"] > runs[0]["images"]
    assert runs[1]["bins_bytes"] == runs[1]["images"] * 589_824
    figures = {f.name: f for f in result.figures}
    ratio = figures["wall / inference lower bound at Market-1501's size"]
    assert ratio.value is not None and ratio.value > 0 and ratio.met is not None
    assert "extrapolated" in ratio.note
    assert figures["bins at full size"].value == pytest.approx(19281 * 589_824 / 1e9)
    assert result.details["full_size_ranking"]["seconds"] > 0
