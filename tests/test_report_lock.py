"""Every writer of a run folder takes its lock (issue 11, part 5): a report comparing several
runs writes into its --out folder, which may be one of those runs; it refuses while another
pcb process holds that folder, and leaves nothing behind when it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from reliability_helpers import REPO
from report_runs import CPU, GPU, evaluation, make_run

from pcb.cli.main import main
from pcb.record.runlock import LOCK_NAME, RunLock


@contextmanager
def held(folder: Path, stage: str) -> Iterator[subprocess.Popen]:
    """Another process holding the folder's lock, as a running stage does."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pcb.record.runlock import RunLock; "
            f"RunLock({str(folder)!r}, {stage!r}).acquire(); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    cpu = make_run(tmp_path / "cpu", perf={CPU: {1: 20.0, 8: 28.0}}, evals=[evaluation()])
    gpu = make_run(tmp_path / "gpu", perf={GPU: {1: 700.0, 8: 1300.0}})
    return cpu.root, gpu.root


def _report(*args: str | Path) -> list[str]:
    return ["report", *(str(a) for a in args), "--no-plots"]


def test_a_comparison_into_a_busy_run_folder_refuses(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cpu, gpu = runs
    with held(cpu, "infer/onnxruntime") as holder:
        code = main(_report("--run", cpu, "--run", gpu, "--out", cpu))
    err = capsys.readouterr().err
    assert code == 1
    assert f"run folder {cpu} is in use by stage infer/onnxruntime (pid {holder.pid}" in err
    assert not (cpu / "comparison.md").exists() and not (cpu / "comparison.json").exists()


def test_a_comparison_into_a_run_folder_holds_its_lock_while_it_writes(
    runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu, gpu = runs
    import pcb.report.comparison

    real = pcb.report.comparison.write_comparison
    refused: list[bool] = []

    def writing(*args, **kwargs):
        # While the report writes, a stage into the same folder (another process: a record
        # lock never refuses its own holder) is refused.
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from pcb.record.runlock import RunLock; RunLock({str(cpu)!r}, 'perf').acquire()",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        refused.append(other.returncode != 0 and "is in use by stage report" in other.stderr)
        return real(*args, **kwargs)

    monkeypatch.setattr(pcb.report.comparison, "write_comparison", writing)
    assert main(_report("--run", cpu, "--run", gpu, "--out", cpu)) == 0
    assert refused == [True]
    assert (cpu / "comparison.md").is_file()
    # Released when it ends: the folder is free at once.
    lock = RunLock(cpu, "perf")
    lock.acquire()
    lock.release()


def test_the_default_comparison_folder_is_locked_too(
    runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    cpu, gpu = runs
    monkeypatch.chdir(tmp_path)
    comparison = tmp_path / "results" / "comparison"
    comparison.mkdir(parents=True)
    with held(comparison, "report"):
        assert main(_report("--run", cpu, "--run", gpu)) == 1
    assert "results/comparison is in use by stage report" in capsys.readouterr().err
    assert main(_report("--run", cpu, "--run", gpu)) == 0
    assert (comparison / "comparison.md").is_file()


def test_a_failed_comparison_leaves_no_folder_behind(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu, _ = runs
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "new-out"
    assert main(_report("--run", cpu, "--run", empty, "--out", out)) == 1
    assert "nothing to report" in capsys.readouterr().err
    assert not out.exists()
    # An existing folder is left as it was, but for the lock file every writer leaves.
    out.mkdir()
    assert main(_report("--run", cpu, "--run", empty, "--out", out)) == 1
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]
