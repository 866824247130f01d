"""The run manifest: what each stage read, how it was asked and what it wrote; skipping only
what verifies; --force; failures recorded; the report trusting only complete stages."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from reliability_helpers import manifest

from pcb.cli.main import main
from pcb.demo import write_dataset
from pcb.errors import PcbError
from pcb.layout import RunLayout
from pcb.record.digest import file_digest
from pcb.record.manifest import (
    ManifestView,
    StagePlan,
    dataset_fingerprint,
    read_manifest,
    run_recorded,
    tree_fingerprint,
)
from pcb.report.runs import NO_MANIFEST

pytest.importorskip("onnxruntime")
from tiny_model import make_tiny_model  # noqa: E402


def _plan(tmp_path: Path, **changes) -> StagePlan:
    fields = {
        "key": "thing",
        "stage": "thing",
        "inputs": {"source": tmp_path / "source.txt"},
        "options": {"size": 3},
        "outputs": ("out/thing.txt",),
    }
    fields.update(changes)
    return StagePlan(**fields)


def _writer(layout: RunLayout, calls: list[int], text: str = "made"):
    def body() -> None:
        calls.append(1)
        target = layout.root / "out" / "thing.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    return body


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    (tmp_path / "source.txt").write_text("input")
    return RunLayout(tmp_path / "run")


def test_complete_stage_is_recorded_and_then_skipped(tmp_path: Path, layout: RunLayout) -> None:
    calls: list[int] = []
    printed: list[str] = []
    run_recorded(_plan(tmp_path), layout, _writer(layout, calls), command=["thing"])
    entry = manifest(layout.root)["stages"]["thing"]
    assert entry["status"] == "complete" and entry["options"] == {"size": 3}
    source_fp = entry["inputs"]["source"]["fingerprint"]
    assert source_fp["digest"] == file_digest(tmp_path / "source.txt")
    assert source_fp["content"] == "blake3-128"
    assert entry["outputs"]["out/thing.txt"]["digest"] == file_digest(layout.root / "out/thing.txt")
    assert entry["started"] and entry["finished"] and entry["command"] == ["thing"]
    assert entry["environment"]["versions"]["numpy"]
    assert manifest(layout.root)["inputs"]["source"]["path"] == str(tmp_path / "source.txt")

    result = run_recorded(_plan(tmp_path), layout, _writer(layout, calls), echo=printed.append)
    assert result.skip and calls == [1]
    assert "thing: skipped" in printed[0] and "--force" in printed[0]


def _rewrite_keeping_mtime(path: Path, text: str) -> None:
    """Other content of the same size, the old mtime set back: only ctime tells."""
    stat = path.stat()
    assert len(text.encode()) == stat.st_size
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.mark.parametrize(
    "change",
    [
        "option",
        "input",
        "input-same-size-same-mtime",
        "output-edited",
        "output-same-size-same-mtime",
        "output-gone",
        "force",
    ],
)
def test_a_stage_runs_again_when_anything_changed(
    change: str, tmp_path: Path, layout: RunLayout
) -> None:
    calls: list[int] = []
    run_recorded(_plan(tmp_path), layout, _writer(layout, calls))
    plan, force = _plan(tmp_path), False
    if change == "option":
        plan = _plan(tmp_path, options={"size": 4})
    elif change == "input":
        (tmp_path / "source.txt").write_text("other input")
    elif change == "input-same-size-same-mtime":
        _rewrite_keeping_mtime(tmp_path / "source.txt", "INPUT")
    elif change == "output-same-size-same-mtime":
        _rewrite_keeping_mtime(layout.root / "out" / "thing.txt", "MADE")
    elif change == "output-edited":
        (layout.root / "out" / "thing.txt").write_text("edited by hand")
    elif change == "output-gone":
        (layout.root / "out" / "thing.txt").unlink()
    else:
        force = True
    result = run_recorded(plan, layout, _writer(layout, calls), force=force)
    assert not result.skip and calls == [1, 1]
    entry = manifest(layout.root)["stages"]["thing"]
    assert entry["status"] == "complete" and entry["forced"] is force


def test_force_removes_the_reset_outputs_first(tmp_path: Path, layout: RunLayout) -> None:
    plan = _plan(tmp_path, reset=("out",))
    run_recorded(plan, layout, _writer(layout, []))
    (layout.root / "out" / "stale.bin").write_text("left from before")
    run_recorded(plan, layout, _writer(layout, []), force=True)
    assert not (layout.root / "out" / "stale.bin").exists()


def test_a_failure_is_recorded_with_its_error(tmp_path: Path, layout: RunLayout) -> None:
    run_recorded(_plan(tmp_path), layout, _writer(layout, []))

    def fails() -> None:
        raise PcbError("image x.jpg cannot be decoded: re-download it")

    with pytest.raises(PcbError):
        run_recorded(_plan(tmp_path), layout, fails, force=True)
    entry = manifest(layout.root)["stages"]["thing"]
    assert entry["status"] == "failed" and "x.jpg cannot be decoded" in entry["error"]
    assert entry["planned_outputs"] == ["out/thing.txt"]
    # A later run does not take the failed one for done.
    calls: list[int] = []
    assert not run_recorded(_plan(tmp_path), layout, _writer(layout, calls)).skip


def test_ctrl_c_is_recorded(tmp_path: Path, layout: RunLayout) -> None:
    def interrupted() -> None:
        (layout.root / "partial.txt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recorded(_plan(tmp_path), layout, interrupted)
    assert manifest(layout.root)["stages"]["thing"]["error"] == "interrupted (Ctrl-C)"


def test_refused_at_once_in_a_new_folder_leaves_no_folder(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "new" / "run")

    def refuses() -> None:
        raise PcbError("checkpoint missing")

    with pytest.raises(PcbError):
        run_recorded(_plan(tmp_path), layout, refuses)
    assert not layout.root.exists()


def test_a_raw_disk_full_error_becomes_a_clear_one(tmp_path: Path, layout: RunLayout) -> None:
    def full() -> None:
        (layout.root / "some.txt").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device", str(layout.root / "model.onnx"))

    with pytest.raises(PcbError, match=r"no space left on the device holding .*free space"):
        run_recorded(_plan(tmp_path), layout, full)
    assert manifest(layout.root)["stages"]["thing"]["status"] == "failed"


def test_stale_temporary_files_are_removed_before_a_stage(
    tmp_path: Path, layout: RunLayout
) -> None:
    stale = layout.root / "bins" / "query" / ".0001_c1s1_000001_00.bin.k2j3h4.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    keep = layout.root / "bins" / "query" / "0001_c1s1_000001_00.bin"
    keep.write_bytes(b"whole")
    run_recorded(_plan(tmp_path), layout, _writer(layout, []))
    assert not stale.exists() and keep.exists()


def test_image_and_versions_are_recorded(
    tmp_path: Path, layout: RunLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCB_IMAGE", "pcb-runtime:latest")
    monkeypatch.setenv("PCB_IMAGE_ID", "sha256:abc")
    run_recorded(_plan(tmp_path), layout, _writer(layout, []))
    env = manifest(layout.root)["stages"]["thing"]["environment"]
    assert env["image"] == {"pcb_image": "pcb-runtime:latest", "pcb_image_id": "sha256:abc"}
    assert env["python"] and env["host"]


def test_fingerprints_are_by_content(tmp_path: Path) -> None:
    folder = tmp_path / "tree"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.bin").write_bytes(b"1234")
    first = tree_fingerprint(folder)
    assert (first["files"], first["bytes"]) == (1, 4)
    (folder / "a" / ".x.bin.abc.tmp").write_bytes(b"temp")  # a temporary file is nobody's
    assert tree_fingerprint(folder) == first
    os.utime(folder / "a" / "x.bin", ns=(1, 1))  # touched, not changed: the same content
    assert tree_fingerprint(folder) == first
    _rewrite_keeping_mtime(folder / "a" / "x.bin", "1235")
    assert tree_fingerprint(folder)["digest"] != first["digest"]
    (folder / "a" / "x.bin").write_bytes(b"1234")
    assert tree_fingerprint(folder) == first
    (folder / "a" / "x.bin").rename(folder / "a" / "y.bin")  # the same bytes, another name
    assert tree_fingerprint(folder)["digest"] != first["digest"]
    assert dataset_fingerprint(tmp_path / "nowhere")["kind"] == "invalid"


def test_a_damaged_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(PcbError, match="not a pcb run manifest"):
        read_manifest(tmp_path)


# ---------------------------------------------------------------- real stages and the report


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=1, identities=4)


@pytest.fixture(scope="module")
def evaluated(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("evaluated") / "run"
    data = str(dataset.parent)
    assert main(["preprocess", "--dataset", data, "--run", str(run), "--workers", "1"]) == 0
    make_tiny_model(run / "model" / "pcb.onnx")
    assert main(["infer", "--run", str(run), "--quiet"]) == 0
    assert main(["evaluate", "--dataset", data, "--run", str(run)]) == 0
    args = ["perf", "--run", str(run), "--batch-sizes", "1,2", "--timer", "fixed"]
    args += ["--iterations", "2", "--quiet"]
    assert main(args) == 0
    return run


def _copy(evaluated: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    return run


def test_every_stage_of_a_run_is_recorded(evaluated: Path) -> None:
    stages = manifest(evaluated)["stages"]
    assert list(stages) == [
        "preprocess",
        "infer/onnxruntime",
        "evaluate/onnxruntime",
        "perf/onnxruntime",
    ]
    assert all(entry["status"] == "complete" for entry in stages.values())
    assert set(stages["evaluate/onnxruntime"]["outputs"]) == {"eval/onnxruntime.json"}
    assert set(stages["infer/onnxruntime"]["outputs"]) == {"dumps/onnxruntime"}
    assert stages["perf/onnxruntime"]["options"]["batch_sizes"] == [1, 2]
    assert set(manifest(evaluated)["inputs"]) == {"dataset"}  # inputs from outside the run


def test_report_takes_figures_only_from_complete_stages(
    evaluated: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(evaluated, tmp_path)
    # The evaluation is run again and fails (a dump went missing): its old record stays on
    # disk, but no complete stage vouches for it any more.
    next((run / "dumps" / "onnxruntime" / "query").glob("*.bin")).unlink()
    assert main(["evaluate", "--dataset", str(dataset.parent), "--run", str(run)]) == 1
    assert (run / "eval" / "onnxruntime.json").is_file()
    capsys.readouterr()
    assert main(["report", "--run", str(run), "--no-plots"]) == 0
    report = json.loads((run / "comparison.json").read_text())
    assert report["accuracy"] == {} and report["throughput"]
    [note] = [n for n in report["notes"] if "eval/onnxruntime.json" in n]
    assert "stage evaluate/onnxruntime is recorded failed" in note
    assert "left out eval/onnxruntime.json" in (run / "comparison.md").read_text()


def test_report_leaves_out_a_record_edited_after_its_stage(evaluated: Path, tmp_path: Path) -> None:
    run = _copy(evaluated, tmp_path)
    record = json.loads((run / "perf" / "onnxruntime.json").read_text())
    record["records"][0]["images_per_s"] = 1e9  # a figure typed in by hand
    (run / "perf" / "onnxruntime.json").write_text(json.dumps(record))
    assert main(["report", "--run", str(run), "--no-plots"]) == 0
    report = json.loads((run / "comparison.json").read_text())
    assert report["throughput"] == {} or all(
        "1000000000" not in json.dumps(entry) for entry in report["throughput"]
    )
    assert any("changed since stage perf/onnxruntime wrote it" in n for n in report["notes"])


def test_a_run_copied_without_its_manifest_still_reports(evaluated: Path, tmp_path: Path) -> None:
    run = _copy(evaluated, tmp_path)
    (run / "manifest.json").unlink()
    assert main(["report", "--run", str(run), "--no-plots"]) == 0
    report = json.loads((run / "comparison.json").read_text())
    assert report["accuracy"] and report["throughput"]
    assert report["notes"] == [NO_MANIFEST]
    assert not (run / "manifest.json").exists()  # the report does not start one


def test_a_stage_running_elsewhere_is_not_trusted(evaluated: Path, tmp_path: Path) -> None:
    run = _copy(evaluated, tmp_path)
    data = manifest(run)
    data["stages"]["perf/onnxruntime"]["status"] = "running"
    (run / "manifest.json").write_text(json.dumps(data))
    problem = ManifestView.load(run).problem(run / "perf" / "onnxruntime.json")
    assert problem == "perf/onnxruntime.json: stage perf/onnxruntime is recorded running"


def test_parity_amends_the_evaluation_without_invalidating_it(
    evaluated: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(evaluated, tmp_path)
    # A second backend's dumps: a copy of onnxruntime's, evaluated under another name.
    shutil.copytree(run / "dumps" / "onnxruntime", run / "dumps" / "other")
    data = str(dataset.parent)
    assert main(["evaluate", "--dataset", data, "--run", str(run), "--backend", "other"]) == 0
    assert main(["parity", "--run", str(run), "--backend", "other"]) == 0
    stages = manifest(run)["stages"]
    assert stages["parity/other"]["status"] == "complete"
    capsys.readouterr()
    # The evaluation still verifies: parity only added its figures to the record.
    assert main(["evaluate", "--dataset", data, "--run", str(run), "--backend", "other"]) == 0
    assert "evaluate/other: skipped" in capsys.readouterr().out
    assert main(["report", "--run", str(run), "--no-plots"]) == 0
    report = json.loads((run / "comparison.json").read_text())
    assert not any("eval/other.json" in n for n in report["notes"])


def test_invoke_force_reaches_every_stage_but_the_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util

    from invoke import Config, Context
    from reliability_helpers import REPO

    spec = importlib.util.spec_from_file_location("project_tasks", REPO / "tasks.py")
    assert spec is not None and spec.loader is not None
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    tasks.full(Context(Config()), demo=True, print_docker=True, force=True)
    lines = capsys.readouterr().out.splitlines()
    stages = {re.split(r" pcb-runtime:\S+ ", line)[-1].split()[0]: line for line in lines}
    for stage in ("preprocess", "infer", "evaluate", "perf"):
        assert stages[stage].endswith("--force") or " --force " in stages[stage], stage
    assert "--force" not in stages["report"]
    tasks.perf(Context(Config()), demo=True, print_docker=True)
    assert "--force" not in capsys.readouterr().out
