"""A manifest.json that cannot be used (issue 11, part 5): empty or cut short by a power cut,
valid JSON of another shape, written by a newer pcb. A stage keeps it aside as
manifest.json.bad, says so, and runs again from the files already whole; the report, which
must not change a run folder's records, refuses with the way on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability_helpers import manifest

from pcb.cli.main import main
from pcb.demo import write_dataset
from pcb.errors import PcbError
from pcb.layout import RunLayout
from pcb.record.manifest import SCHEMA, StagePlan, read_manifest, run_recorded

GOOD = {"schema": SCHEMA, "run": "x", "inputs": {}, "stages": {}}
DAMAGED = {
    # case: (file content, what the message says)
    "empty": ("", "is not whole JSON"),
    "truncated": ('{"schema": 1, "stages": {"export": {"status": "comp', "is not whole JSON"),
    "list": ("[]", "holds a JSON list, not a pcb run manifest"),
    "string": ('"manifest"', "holds a JSON str, not a pcb run manifest"),
    "no-schema": ('{"stages": {}, "inputs": {}}', "has no schema number"),
    "schema-text": ('{"schema": "1", "stages": {}, "inputs": {}}', "has no schema number"),
    "stages-list": ('{"schema": 1, "stages": [], "inputs": {}}', "has no `stages` object"),
    "no-inputs": ('{"schema": 1, "stages": {}}', "has no `inputs` object"),
    "future": (
        json.dumps({**GOOD, "schema": SCHEMA + 1}),
        f"was written by a newer pcb (manifest schema {SCHEMA + 1}; this pcb reads schema {SCHEMA}",
    ),
    "not-utf8": (b"\xff\xfe{}", "cannot be read"),
}


def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_reading_names_the_problem_and_the_way_on(tmp_path: Path, case: str) -> None:
    content, says = DAMAGED[case]
    _write(tmp_path / "manifest.json", content)
    with pytest.raises(PcbError) as error:
        read_manifest(tmp_path)
    message = str(error.value)
    assert f"{tmp_path / 'manifest.json'} " in message and says in message
    assert "manifest.json.bad" in message and "or delete it" in message
    # Only reading: the file is where it was.
    assert (tmp_path / "manifest.json").exists() and not (tmp_path / "manifest.json.bad").exists()


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_stage_sets_it_aside_and_runs_again(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    content, says = DAMAGED[case]
    root = tmp_path / "run"
    _write(root / "manifest.json", content)
    (tmp_path / "in.txt").write_text("input")
    plan = StagePlan(key="thing", stage="thing", inputs={"source": tmp_path / "in.txt"})
    calls: list[int] = []
    result = run_recorded(plan, RunLayout(root), lambda: calls.append(1))
    assert calls == [1] and not result.skip
    err = capsys.readouterr().err
    assert f"warning: {root / 'manifest.json'} {says}" in err
    assert f"kept aside as {root / 'manifest.json.bad'}" in err and "runs again" in err
    kept = root / "manifest.json.bad"
    assert (kept.read_bytes() if isinstance(content, bytes) else kept.read_text()) == content
    # A new, whole manifest: the next run reads it and skips the stage.
    assert manifest(root)["stages"]["thing"]["status"] == "complete"
    assert run_recorded(plan, RunLayout(root), lambda: calls.append(1)).skip
    assert calls == [1]


def test_a_good_manifest_is_read_as_it_is(tmp_path: Path) -> None:
    _write(tmp_path / "manifest.json", json.dumps(GOOD))
    assert read_manifest(tmp_path, set_aside=True) == GOOD
    assert not (tmp_path / "manifest.json.bad").exists()


# ---------------------------------------------------------------- through the command line


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=3, identities=2)


def test_after_a_power_cut_preprocessing_resumes_from_the_whole_bins(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["preprocess", "--dataset", str(dataset), "--run", str(run), "--quiet"]
    assert main(args) == 0
    bins = sorted((run / "bins").rglob("*.bin"))
    mtimes = {b: b.stat().st_mtime_ns for b in bins}
    (run / "manifest.json").write_text("")  # what a power cut left of an unsynced rename
    capsys.readouterr()
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "kept aside as" in err and "preprocess: skipped" not in out
    # Treated as not run: it ran again, and kept every bin already whole.
    assert {b: b.stat().st_mtime_ns for b in bins} == mtimes
    assert manifest(run)["stages"]["preprocess"]["status"] == "complete"
    assert (run / "manifest.json.bad").read_text() == ""


def test_the_report_refuses_a_damaged_manifest_with_the_way_on(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["preprocess", "--dataset", str(dataset), "--run", str(run), "--quiet"]) == 0
    (run / "manifest.json").write_text(json.dumps({**GOOD, "schema": 99}))
    capsys.readouterr()
    assert main(["report", "--run", str(run), "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert "written by a newer pcb (manifest schema 99" in err
    assert "Run any stage into this folder" in err and "manifest.json.bad" in err
    # The report changed nothing of the run's records.
    assert json.loads((run / "manifest.json").read_text())["schema"] == 99
    assert not (run / "manifest.json.bad").exists()
