"""Concurrent runs: into different run folders they do not interfere; into the same folder
the second one refuses at once, naming the first; a killed holder never blocks anyone."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_helpers import (
    REPO,
    assert_same_run,
    count_files,
    kill_when,
    manifest,
    pcb,
    slow_model,
    tmpfs,
)

from pcb.demo import write_dataset
from pcb.record.runlock import RunLock

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=9, identities=24)


@pytest.fixture(scope="module")
def prepared(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessed run with a model slow enough that a second process starts meanwhile."""
    run = tmp_path_factory.mktemp("prepared") / "run"
    result = pcb("preprocess", "--dataset", dataset, "--run", run, "--quiet")
    assert result.returncode == 0, result.stderr
    slow_model(run / "model" / "pcb.onnx", width=256)
    return run


def _start(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pcb", *(str(a) for a in args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_second_process_into_the_same_folder_refuses(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(prepared, run)
    first = _start("infer", "--run", run, "--batch-size", "2", "--threads", "1", "--quiet")
    try:
        dumps = run / "dumps" / "onnxruntime" / "query"
        deadline = time.monotonic() + 60
        while count_files(dumps) < 3:  # the first one is inferring: it holds the lock
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = pcb("infer", "--run", run, "--batch-size", "2", "--quiet")
        assert first.poll() is None, "the first run ended before the second one started"
    finally:
        out, err = first.communicate(timeout=120)
    assert second.returncode == 1
    assert f"run folder {run} is in use by stage infer/onnxruntime (pid {first.pid}" in (
        second.stderr
    )
    assert "another --run folder" in second.stderr
    assert first.returncode == 0, err
    # The refused run wrote nothing: the manifest holds the first run, complete.
    entry = manifest(run)["stages"]["infer/onnxruntime"]
    assert entry["status"] == "complete" and entry["pid"] == first.pid


def test_runs_into_different_folders_do_not_interfere(prepared: Path, tmp_path: Path) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        shutil.copytree(prepared, run)
    processes = [
        _start("infer", "--run", run, "--batch-size", "4", "--threads", "1", "--quiet")
        for run in runs
    ]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    assert_same_run(runs[0], runs[1])
    for run, process in zip(runs, processes):
        assert manifest(run)["run"] == str(run)
        assert list(manifest(run)["stages"]) == ["preprocess", "infer/onnxruntime"]
        assert manifest(run)["stages"]["infer/onnxruntime"]["pid"] == process.pid


def test_a_lock_held_by_another_process_is_named(tmp_path: Path, dataset: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pcb.record.runlock import RunLock; "
            f"RunLock({str(run)!r}, 'export').acquire(); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = pcb("preprocess", "--dataset", dataset, "--run", run, "--quiet")
        assert refused.returncode == 1
        assert f"is in use by stage export (pid {holder.pid} on " in refused.stderr
        assert not (run / "bins").exists() and not (run / "manifest.json").exists()
        # Killed: the kernel drops its lock with it, and the folder is usable at once.
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        result = pcb("preprocess", "--dataset", dataset, "--run", run, "--quiet")
        assert result.returncode == 0, result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_orphaned_pool_workers_do_not_hold_the_lock(dataset: Path, tmp_path: Path) -> None:
    """Only the parent is killed: its forked pool workers live on, orphaned, yet the next run
    starts at once (a POSIX record lock is the process's own, a flock would be theirs too)."""
    run, whole = tmp_path / "run", tmp_path / "whole"
    args = ["preprocess", "--dataset", dataset, "--quiet", "--workers", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pcb", *(str(a) for a in args), "--run", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while count_files(run / "bins" / "query") < 5:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)  # the parent alone
        process.wait()
        again = pcb(*args, "--run", run)
        assert again.returncode == 0, again.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the orphans
    assert pcb(*args, "--run", whole).returncode == 0
    assert_same_run(run, whole)


def test_lock_is_released_when_the_stage_ends(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run", "export") as lock:
        assert lock.path.is_file()
    with RunLock(tmp_path / "run", "export"):
        pass


def test_a_read_only_run_folder_is_refused_clearly(tmp_path: Path, dataset: Path) -> None:
    folder = tmp_path / "ro"
    if os.geteuid() == 0:
        context = tmpfs(folder, "1m", read_only=True)  # root writes through chmod 555
    else:
        folder.mkdir()
        folder.chmod(0o555)
        context = contextlib.nullcontext(folder)
    with context:
        result = pcb("preprocess", "--dataset", dataset, "--run", folder / "run", "--quiet")
        assert result.returncode == 1
        assert "must be writable" in result.stderr and str(folder / "run") in result.stderr


def test_a_killed_stage_is_picked_up_by_the_next(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["preprocess", "--dataset", dataset, "--run", run, "--quiet"]
    kill_when(args, lambda: count_files(run / "bins" / "query") >= 3)
    assert manifest(run)["stages"]["preprocess"]["status"] == "running"
    result = pcb(*args)
    assert result.returncode == 0, result.stderr
    assert "was interrupted; continuing where it stopped" in result.stdout
