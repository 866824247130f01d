"""Interrupted stages resume: preprocessing and inference are killed (SIGKILL, the whole
process group) half-way, run again, and must end with exactly the files of a run that was
never interrupted, byte for byte; the manifest says what happened in between."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reliability_helpers import (
    assert_nothing_half_written,
    assert_same_run,
    count_files,
    kill_when,
    manifest,
    pcb,
    slow_model,
)

from pcb.demo import write_dataset

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 370 images: preprocessing takes long enough (a second) to be killed in."""
    return write_dataset(tmp_path_factory.mktemp("data"), seed=5, identities=48)


def test_killed_preprocessing_resumes_to_the_same_bins(dataset: Path, tmp_path: Path) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = ["preprocess", "--dataset", dataset, "--quiet", "--workers", "2"]
    assert pcb(*args, "--run", whole).returncode == 0
    total = count_files(whole / "bins" / "query") + count_files(whole / "bins" / "gallery")

    # Killed once some query bins exist, mid-split, pool workers and all.
    kill_when([*args, "--run", resumed], lambda: count_files(resumed / "bins" / "query") >= 12)
    done = count_files(resumed / "bins" / "query") + count_files(resumed / "bins" / "gallery")
    assert 0 < done < total, "killed too late to test resuming"
    # What a killed run leaves: complete bins only, no .info list (it marks a split done),
    # and a manifest that says the stage never finished.
    assert_nothing_half_written(resumed, killed=True)
    assert not (resumed / "bins" / "query.info").exists()
    assert manifest(resumed)["stages"]["preprocess"]["status"] == "running"

    rerun = pcb(*args, "--run", resumed)
    assert rerun.returncode == 0, rerun.stderr
    assert "was interrupted; continuing where it stopped" in rerun.stdout
    assert manifest(resumed)["stages"]["preprocess"]["status"] == "complete"
    # Every bin, both .info lists and both digest records.
    assert assert_same_run(resumed, whole) == total + 4


def test_killed_inference_resumes_to_the_same_dumps(dataset: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    prepared = pcb("preprocess", "--dataset", dataset, "--run", base, "--quiet")
    assert prepared.returncode == 0, prepared.stderr
    slow_model(base / "model" / "pcb.onnx")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    shutil.copytree(base, whole)
    shutil.copytree(base, resumed)

    # Batches of 4 and one thread: a kill lands inside a batch, between two dump writes.
    args = ["infer", "--batch-size", "4", "--threads", "1", "--quiet"]
    assert pcb(*args, "--run", whole).returncode == 0
    dumps = resumed / "dumps" / "onnxruntime"
    kill_when([*args, "--run", resumed], lambda: count_files(dumps / "query") >= 9)
    assert 0 < count_files(dumps / "query") < count_files(whole / "dumps/onnxruntime/query")
    assert_nothing_half_written(resumed, killed=True)
    assert manifest(resumed)["stages"]["infer/onnxruntime"]["status"] == "running"

    rerun = pcb(*args, "--run", resumed)
    assert rerun.returncode == 0, rerun.stderr
    assert manifest(resumed)["stages"]["infer/onnxruntime"]["status"] == "complete"
    compared = assert_same_run(resumed, whole)
    assert compared > 300  # bins, info lists, model, every dump and the infer records

    # The same evaluation from both: nothing about the interruption reaches the figures.
    for run in (whole, resumed):
        result = pcb("evaluate", "--dataset", dataset, "--run", run)
        assert result.returncode == 0, result.stderr
    assert_same_run(resumed, whole)


def test_a_second_run_is_skipped_and_force_runs_it(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["preprocess", "--dataset", dataset, "--run", run, "--quiet"]
    assert pcb(*args).returncode == 0
    first = manifest(run)["stages"]["preprocess"]
    again = pcb(*args)
    assert again.returncode == 0 and "preprocess: skipped" in again.stdout
    assert manifest(run)["stages"]["preprocess"]["finished"] == first["finished"]
    forced = pcb("--force", *args)
    assert forced.returncode == 0 and "preprocess: skipped" not in forced.stdout
    entry = manifest(run)["stages"]["preprocess"]
    assert entry["forced"] is True and entry["status"] == "complete"


@pytest.mark.slow
def test_killed_inference_of_the_real_model_resumes_byte_for_byte(
    tmp_path: Path, demo_checkpoint: Path
) -> None:
    """The exported PCB itself: a resumed run batches the remaining images differently from
    an unbroken one, and onnxruntime must still give each image the same bytes."""
    dataset = write_dataset(tmp_path / "data", seed=6, identities=6)
    base = tmp_path / "base"
    for args in (
        ["export", "--checkpoint", demo_checkpoint, "--run", base],
        ["preprocess", "--dataset", dataset, "--run", base, "--quiet"],
    ):
        result = pcb(*args, timeout=300)
        assert result.returncode == 0, result.stderr
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    shutil.copytree(base, whole)
    shutil.copytree(base, resumed)
    args = ["infer", "--batch-size", "4", "--quiet"]
    assert pcb(*args, "--run", whole, timeout=600).returncode == 0
    dumps = resumed / "dumps" / "onnxruntime"
    kill_when([*args, "--run", resumed], lambda: count_files(dumps / "query") >= 6, timeout=300)
    assert 0 < count_files(dumps / "query") < count_files(whole / "dumps/onnxruntime/query")
    assert pcb(*args, "--run", resumed, timeout=600).returncode == 0
    assert_same_run(resumed, whole)
