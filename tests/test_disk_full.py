"""A full disk while writing: the run folder is a small tmpfs. The stage must stop with an
error naming the folder and the fix, leave no temporary or truncated file, record itself
failed, and, once there is room, continue to the very files an unbroken run writes."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from reliability_helpers import (
    assert_nothing_half_written,
    assert_same_run,
    count_files,
    manifest,
    pcb,
    resize_tmpfs,
    slow_model,
    tmpfs,
)

from pcb.constants import INPUT_BYTES
from pcb.demo import write_dataset

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=2, identities=4)


@pytest.fixture(scope="module")
def whole(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same stages on a disk with room: what the resumed runs must end up equal to."""
    run = tmp_path_factory.mktemp("whole") / "run"
    assert pcb("preprocess", "--dataset", dataset, "--run", run, "--quiet").returncode == 0
    slow_model(run / "model" / "pcb.onnx", width=8)
    assert pcb("infer", "--run", run, "--quiet").returncode == 0
    return run


def _assert_disk_full_error(stderr: str, folder: Path) -> None:
    assert "no space left on the device holding" in stderr, stderr
    assert str(folder) in stderr
    assert "free space" in stderr and "run the same command again" in stderr
    assert "Traceback" not in stderr


def test_preprocessing_on_a_full_disk(dataset: Path, whole: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        run = disk / "run"
        result = pcb("preprocess", "--dataset", dataset, "--run", run, "--quiet")
        assert result.returncode == 1
        _assert_disk_full_error(result.stderr, run)
        assert_nothing_half_written(run)
        assert 0 < count_files(run / "bins" / "query") < 4  # 3 bins fill 2 MB
        assert not (run / "bins" / "query.info").exists()
        entry = manifest(run)["stages"]["preprocess"]
        assert entry["status"] == "failed" and "no space left" in entry["error"]

        resize_tmpfs(disk, "64m")
        again = pcb("preprocess", "--dataset", dataset, "--run", run, "--quiet")
        assert again.returncode == 0, again.stderr
        assert manifest(run)["stages"]["preprocess"]["status"] == "complete"
        bins = whole / "bins"
        compared = assert_same_run(run / "bins", bins)
        # Every bin, both .info lists and both digest records.
        assert compared == count_files(bins / "query") + count_files(bins / "gallery") + 4


def test_inference_on_a_full_disk(whole: Path, tmp_path: Path) -> None:
    bins = count_files(whole / "bins" / "query") + count_files(whole / "bins" / "gallery")
    # Room for the bins, the model and about ten dumps of 48 KiB.
    size = bins * INPUT_BYTES + 1_200_000
    with tmpfs(tmp_path / "disk", str(size)) as disk:
        run = disk / "run"
        run.mkdir()
        for name in ("bins", "model"):
            shutil.copytree(whole / name, run / name)
        result = pcb("infer", "--run", run, "--quiet")
        assert result.returncode == 1
        _assert_disk_full_error(result.stderr, run)
        assert_nothing_half_written(run)
        assert 0 < count_files(run / "dumps" / "onnxruntime" / "query") < bins
        entry = manifest(run)["stages"]["infer/onnxruntime"]
        assert entry["status"] == "failed" and "no space left" in entry["error"]

        resize_tmpfs(disk, "64m")
        again = pcb("infer", "--run", run, "--quiet")
        assert again.returncode == 0, again.stderr
        assert_same_run(run, whole)


def test_a_disk_full_before_the_stage_starts(dataset: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        run = disk / "run"
        run.mkdir()
        # Filled to the last block: not even the manifest fits.
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as error:
            assert error.errno == errno.ENOSPC
        finally:
            os.close(fd)
        result = pcb("preprocess", "--dataset", dataset, "--run", run, "--quiet")
        assert result.returncode == 1
        _assert_disk_full_error(result.stderr, run)
        assert_nothing_half_written(run)
        assert not (run / "bins").exists()
