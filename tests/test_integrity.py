"""Damaged runs: outputs and inputs changed behind the pipeline's back, by content only.

Each test makes a clean run (the demo data generator, the tiny model), damages a copy of it
the way the red team did (same-size overwrites of bins and dumps, overwrites with the mtime
set back, a dataset image replaced under its name, a checkpoint rewritten in place), then
checks that `pcb verify` names every damaged file with its stage and both digests, that the
report leaves out the figures that depend on it and says which file, and that running the
pipeline again redoes exactly what changed, says so, and ends with the files and figures of
a clean run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import manifest, run_files

from pcb.cli.main import main
from pcb.constants import FEATURE_BYTES, INPUT_BYTES
from pcb.dataset import find_market_root
from pcb.demo import write_dataset
from pcb.record.digest import file_digest

pytest.importorskip("onnxruntime")
from tiny_model import make_tiny_model  # noqa: E402

METRICS = ("top1", "top5", "top10", "mAP", "cmc", "num_query", "num_gallery")


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def pipeline(capsys: pytest.CaptureFixture[str], dataset: Path, run: Path) -> dict[str, str]:
    """preprocess, infer, evaluate, as `invoke full` orders them; each stage's output."""
    printed = {}
    for args in (
        ["preprocess", "--dataset", dataset, "--run", run, "--workers", "1", "--quiet"],
        ["infer", "--run", run, "--quiet"],
        ["evaluate", "--dataset", dataset, "--run", run],
    ):
        code, out = cli(capsys, *args)
        assert code == 0, out
        printed[str(args[0])] = out
    return printed


def make_run(dataset: Path, run: Path) -> Path:
    data = str(dataset)
    args = ["--dataset", data, "--run", str(run)]
    assert main(["preprocess", *args, "--workers", "1", "--quiet"]) == 0
    make_tiny_model(run / "model" / "pcb.onnx")
    assert main(["infer", "--run", str(run), "--quiet"]) == 0
    assert main(["evaluate", *args]) == 0
    perf = ["perf", "--run", str(run), "--batch-sizes", "1", "--timer", "fixed"]
    perf += ["--iterations", "1", "--quiet"]
    assert main(perf) == 0
    return run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=3, identities=6)


@pytest.fixture(scope="module")
def clean(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(dataset, tmp_path_factory.mktemp("clean") / "run")


def figures(run: Path) -> dict:
    record = json.loads((run / "eval" / "onnxruntime.json").read_text())
    return {key: record[key] for key in METRICS}


def outputs(run: Path, copied_from: Path | None = None) -> dict[str, bytes]:
    """The bins, dumps and evaluation of a run, byte for byte (records without times; a
    record copied with the run still names the folder it was made in)."""
    alias = str(copied_from).encode() if copied_from else None
    return {
        name: data.replace(alias, b"<run>") if alias else data
        for name, data in run_files(run).items()
        if name.split("/")[0] in ("bins", "dumps", "eval")
    }


def identities(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file: what a stage that rewrote a file would change."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*.bin")
    }


def overwrite(path: Path, keep_mtime: bool, seed: int = 0) -> None:
    """Other finite float32 values of the same size, in place; the mtime set back or not."""
    stat = path.stat()
    values = np.random.default_rng(seed).standard_normal(stat.st_size // 4).astype(np.float32)
    with open(path, "r+b") as handle:
        handle.write(values.tobytes())
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert path.stat().st_size == stat.st_size and np.isfinite(values).all()


def picks(run: Path, folder: str, count: int) -> list[Path]:
    return sorted((run / folder).glob("*.bin"))[:count]


def assert_verify_names(
    capsys: pytest.CaptureFixture[str], run: Path, damaged: dict[str, tuple[str, str, str]]
) -> None:
    """`pcb verify` fails and has one row per damaged file: its stage, expected, found."""
    code, out = cli(capsys, "verify", "--run", run)
    assert code == 1, out
    rows = [line.split() for line in out.splitlines()]
    for name, (stage, expected, found) in damaged.items():
        assert [name, *stage.split(), expected, found] in rows, (name, out)
    assert f"{len(damaged)} mismatch" in out


def assert_report_refuses(
    capsys: pytest.CaptureFixture[str], run: Path, names: list[str]
) -> list[str]:
    """The report keeps the throughput, leaves the accuracy out and names the files."""
    code, out = cli(capsys, "report", "--run", run, "--no-plots")
    assert code == 0, out
    report = json.loads((run / "comparison.json").read_text())
    assert report["accuracy"] == {} and report["throughput"]
    [note] = [n for n in report["notes"] if n.startswith("left out eval/onnxruntime.json")]
    for name in names:
        assert name in note, (name, note)
    assert "left out eval/onnxruntime.json" in (run / "comparison.md").read_text()
    return report["notes"]


# ---------------------------------------------------------------- bins and dumps


def bins_to_damage(run: Path) -> dict[str, Path]:
    """The first query bin and the second gallery bin, by run-relative name."""
    chosen = picks(run, "bins/query", 1) + picks(run, "bins/gallery", 2)[1:]
    return {f"bins/{p.parent.name}/{p.name}": p for p in chosen}


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["mtime-moved", "mtime-set-back"])
def test_damaged_bins_are_redone_and_nothing_else(
    clean: Path, dataset: Path, tmp_path: Path, capsys, keep_mtime: bool
) -> None:
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    damaged = bins_to_damage(run)
    expected = {name: file_digest(path) for name, path in damaged.items()}
    for index, path in enumerate(damaged.values()):
        overwrite(path, keep_mtime, seed=index)
    assert_verify_names(
        capsys,
        run,
        {n: ("preprocess", expected[n], file_digest(p)) for n, p in damaged.items()},
    )
    assert_report_refuses(capsys, run, [n.split("/", 1)[1] for n in damaged])
    # inference refuses bins that no longer match what preprocessing wrote
    code, out = cli(capsys, "infer", "--run", run, "--quiet")
    assert code == 1 and "not match the digest preprocess recorded" in out
    assert "run `pcb preprocess` again" in out

    dumps_before = identities(run / "dumps")
    printed = pipeline(capsys, dataset, run)
    names = [Path(n).name for n in damaged]
    assert (
        f"query: 1 of {len(picks(run, 'bins/query', 999))} bins did not match their recorded "
        f"digest, redone: {names[0]}" in printed["preprocess"]
    )
    assert f"did not match their recorded digest, redone: {names[1]}" in printed["preprocess"]
    # The bins are back as they were: the dumps made from them still stand (inference runs
    # again only because its refused run above is recorded failed) and so does the
    # evaluation made from those dumps.
    assert "redone" not in printed["infer"]
    assert "evaluate/onnxruntime: skipped" in printed["evaluate"]
    assert identities(run / "dumps") == dumps_before
    assert outputs(run, clean) == outputs(clean) and figures(run) == figures(clean)
    assert cli(capsys, "verify", "--run", run)[0] == 0


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["mtime-moved", "mtime-set-back"])
def test_damaged_dumps_are_redone_and_nothing_else(
    clean: Path, dataset: Path, tmp_path: Path, capsys, keep_mtime: bool
) -> None:
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    query = picks(run, "dumps/onnxruntime/query", 2)
    gallery = picks(run, "dumps/onnxruntime/gallery", 1)
    damaged = {f"dumps/onnxruntime/{p.parent.name}/{p.name}": p for p in query + gallery}
    expected = {name: file_digest(path) for name, path in damaged.items()}
    for index, path in enumerate(damaged.values()):
        overwrite(path, keep_mtime, seed=index)
    assert_verify_names(
        capsys,
        run,
        {n: ("infer/onnxruntime", expected[n], file_digest(p)) for n, p in damaged.items()},
    )
    assert_report_refuses(capsys, run, [n.split("/", 2)[2] for n in damaged])

    bins_before = identities(run / "bins")
    kept = {n: i for n, i in identities(run / "dumps").items() if f"dumps/{n}" not in damaged}
    printed = pipeline(capsys, dataset, run)
    assert "preprocess: skipped" in printed["preprocess"]
    total = len(picks(run, "dumps/onnxruntime/query", 999))
    assert (
        f"query: 2 of {total} dumps did not match their recorded digest, redone: "
        f"{query[0].name}, {query[1].name}" in printed["infer"]
    )
    assert (
        f"dumps did not match their recorded digest, redone: {gallery[0].name}"
        in (printed["infer"])
    )
    # The evaluation reads the dumps' folder, whose infer records now carry this run's
    # timing: it runs again, to the same figures (checked below).
    assert "top-1" in printed["evaluate"]
    assert identities(run / "bins") == bins_before
    now = identities(run / "dumps")
    assert {n: now[n] for n in kept} == kept  # every other dump left alone
    assert outputs(run, clean) == outputs(clean) and figures(run) == figures(clean)
    assert cli(capsys, "verify", "--run", run)[0] == 0


def test_a_damaged_digest_record_is_named_by_verify(clean: Path, tmp_path: Path, capsys) -> None:
    """Editing a dump and its record to match still leaves the stage's recorded output."""
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    record_path = run / "dumps" / "onnxruntime" / "query.digests.json"
    dump = picks(run, "dumps/onnxruntime/query", 1)[0]
    overwrite(dump, keep_mtime=True)
    record = json.loads(record_path.read_text())
    record["files"][dump.name][0] = file_digest(dump)
    record_path.write_text(json.dumps(record, separators=(",", ":")))
    code, out = cli(capsys, "verify", "--run", run)
    assert code == 1
    assert f"dumps/onnxruntime/query/{dump.name}" in out
    assert "dumps/onnxruntime/query.digests.json" in out


# ---------------------------------------------------------------- the dataset


def replace_image(dataset: Path) -> Path:
    """A query image replaced by another's pixels under its own name, the mtime set back."""
    query = find_market_root(dataset) / "query"
    victim, other = sorted(query.glob("*.jpg"))[:2]
    stat = victim.stat()
    shutil.copyfile(other, victim)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert victim.read_bytes() == other.read_bytes()
    assert victim.stat().st_mtime_ns == stat.st_mtime_ns
    return victim


def test_a_changed_image_redoes_its_bin_its_dump_and_the_evaluation(
    dataset: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    run = make_run(data, tmp_path / "run")
    before = {p: file_digest(p) for p in (find_market_root(data) / "query").glob("*")}
    victim = replace_image(data)
    image = f"{victim.parent}/{victim.name}"
    found = file_digest(victim)
    assert_verify_names(capsys, run, {image: ("preprocess (input)", before[victim], found)})
    notes = assert_report_refuses(capsys, run, [f"query/{victim.name}"])
    assert any("changed since stage" in n for n in notes)

    stem = victim.stem
    untouched = {
        n: i for n, i in identities(run).items() if stem not in n and n.startswith(("b", "d"))
    }
    printed = pipeline(capsys, data, run)
    total = len(picks(run, "bins/query", 999))
    assert (
        f"query: 1 of {total} bins were made from images that changed since, redone: "
        f"{stem}.bin" in printed["preprocess"]
    )
    assert (
        f"query: 1 of {total} dumps were made from bins that changed since, redone: "
        f"{stem}_0.bin" in printed["infer"]
    )
    assert "top-1" in printed["evaluate"]  # evaluated again
    now = identities(run)
    assert {n: now[n] for n in untouched} == untouched  # only the image's bin and dump
    assert cli(capsys, "verify", "--run", run)[0] == 0

    # The figures of a run made from scratch on the changed dataset.
    fresh = make_run(data, tmp_path / "fresh")
    assert outputs(run) == outputs(fresh) and figures(run) == figures(fresh)


# ---------------------------------------------------------------- the checkpoint


def rewrite_checkpoint(target: Path, source: Path) -> None:
    """Another checkpoint's bytes into `target`'s inode, its old mtime set back."""
    stat = target.stat()
    data = source.read_bytes()
    assert len(data) == stat.st_size  # same architecture, same pickled layout
    with open(target, "r+b") as handle:
        handle.write(data)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from pcb.checkpoint import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("other") / "PCB_other.pt", seed=1)


def test_a_checkpoint_rewritten_in_place_makes_the_export_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What export's own check sees (the md5 it records), without torch: an export record
    written as export_onnx writes it, then the checkpoint rewritten under it."""
    from dataclasses import asdict

    from pcb.export import ExportRecord, current_export
    from pcb.fileio import file_md5
    from pcb.layout import RunLayout

    monkeypatch.setattr("pcb.record.digest.RACY_NS", 0)  # cached at once, as an old file would be
    layout = RunLayout(tmp_path / "run")
    checkpoint = tmp_path / "PCB.pt"
    checkpoint.write_bytes(os.urandom(1 << 20))
    make_tiny_model(layout.onnx_path)
    record = ExportRecord(
        checkpoint=str(checkpoint),
        checkpoint_md5=file_md5(checkpoint),
        checkpoint_format="state_dict",
        onnx=layout.onnx_path.name,
        onnx_md5=file_md5(layout.onnx_path),
        opset=11,
        max_abs_diff=0.0,
    )
    layout.export_record.write_text(json.dumps(asdict(record)))
    assert current_export(checkpoint, layout) is not None
    other = tmp_path / "other.pt"
    other.write_bytes(os.urandom(1 << 20))
    rewrite_checkpoint(checkpoint, other)
    assert current_export(checkpoint, layout) is None


@pytest.mark.slow
def test_a_checkpoint_rewritten_in_place_is_exported_again(
    demo_checkpoint: Path, other_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    checkpoint = tmp_path / "PCB.pt"
    shutil.copyfile(demo_checkpoint, checkpoint)
    run = tmp_path / "run"
    code, out = cli(capsys, "export", "--checkpoint", checkpoint, "--run", run)
    assert code == 0, out
    first = json.loads((run / "model" / "export.json").read_text())
    assert "export: skipped" in cli(capsys, "export", "--checkpoint", checkpoint, "--run", run)[1]

    before = file_digest(checkpoint)
    rewrite_checkpoint(checkpoint, other_checkpoint)
    assert_verify_names(
        capsys, run, {str(checkpoint): ("export (input)", before, file_digest(checkpoint))}
    )
    code, out = cli(capsys, "export", "--checkpoint", checkpoint, "--run", run)
    assert code == 0 and "skipped" not in out and "not exported again" not in out
    record = json.loads((run / "model" / "export.json").read_text())
    assert record["checkpoint_md5"] != first["checkpoint_md5"]
    assert record["onnx_md5"] != first["onnx_md5"]
    entry = manifest(run)["stages"]["export"]
    assert entry["reason"] == "inputs changed: checkpoint"
    assert cli(capsys, "verify", "--run", run)[0] == 0


@pytest.mark.slow
def test_a_rewritten_checkpoint_redoes_the_whole_pipeline_to_a_clean_runs_figures(
    demo_checkpoint: Path, other_checkpoint: Path, dataset: Path, tmp_path: Path, capsys
) -> None:
    """The real model end to end: export, preprocess, infer, evaluate; the checkpoint
    rewritten; the same commands again give the figures of a run made from the new one."""

    def full(checkpoint: Path, run: Path) -> dict[str, str]:
        code, out = cli(capsys, "export", "--checkpoint", checkpoint, "--run", run)
        assert code == 0, out
        return {"export": out, **pipeline(capsys, dataset, run)}

    checkpoint = tmp_path / "PCB.pt"
    shutil.copyfile(demo_checkpoint, checkpoint)
    run = tmp_path / "run"
    full(checkpoint, run)
    bins, dumps = identities(run / "bins"), identities(run / "dumps")
    rewrite_checkpoint(checkpoint, other_checkpoint)
    code, _ = cli(capsys, "report", "--run", run, "--no-plots")
    assert code == 1  # every figure depends on the checkpoint: nothing left to report
    printed = full(checkpoint, run)
    assert "preprocess: skipped" in printed["preprocess"]
    assert identities(run / "bins") == bins
    now = identities(run / "dumps")
    assert now.keys() == dumps.keys() and not any(now[n] == dumps[n] for n in dumps)
    stages = manifest(run)["stages"]
    assert stages["export"]["reason"] == "inputs changed: checkpoint"
    assert stages["infer/onnxruntime"]["reason"] == "inputs changed: model"
    fresh = tmp_path / "fresh"
    full(other_checkpoint, fresh)
    assert outputs(run) == outputs(fresh) and figures(run) == figures(fresh)
    code, out = cli(capsys, "verify", "--run", run)
    # All that is left: the report that found nothing to report, until it runs again.
    rows = [line.split() for line in out.splitlines()]
    assert code == 1 and ["(stage", "status)", "report", "complete", "failed"] in rows, out
    assert "1 mismatch " in out
    assert cli(capsys, "report", "--run", run, "--no-plots")[0] == 0
    assert cli(capsys, "verify", "--run", run)[0] == 0


# ---------------------------------------------------------------- verify itself


def test_verify_is_quiet_on_a_clean_run_and_not_recorded(clean: Path, capsys) -> None:
    before = (clean / "manifest.json").read_bytes()
    code, out = cli(capsys, "verify", "--run", clean, "--quiet")
    assert code == 0
    assert out.count("\n") == 1 and "every output and input matches manifest.json" in out
    assert (clean / "manifest.json").read_bytes() == before


def test_verify_needs_a_manifest(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    code, out = cli(capsys, "verify", "--run", tmp_path / "run")
    assert code == 1 and "no manifest.json" in out and "nothing to verify against" in out


def test_verify_names_a_stage_that_did_not_complete(clean: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    data = manifest(run)
    data["stages"]["perf/onnxruntime"]["status"] = "failed"
    (run / "manifest.json").write_text(json.dumps(data))
    code, out = cli(capsys, "verify", "--run", run)
    assert code == 1
    assert ["(stage", "status)", "perf/onnxruntime", "complete", "failed"] in [
        line.split() for line in out.splitlines()
    ]


def test_verify_names_files_without_the_listings(clean: Path, tmp_path: Path, capsys) -> None:
    """The folder listings are bookkeeping: without them the per-split records name files."""
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    shutil.rmtree(run / ".pcb")
    [dump] = picks(run, "dumps/onnxruntime/gallery", 1)
    expected = file_digest(dump)
    overwrite(dump, keep_mtime=True)
    assert_verify_names(
        capsys,
        run,
        {
            f"dumps/onnxruntime/gallery/{dump.name}": (
                "infer/onnxruntime",
                expected,
                file_digest(dump),
            )
        },
    )


def test_invoke_verify_runs_the_stage_in_the_runtime_image(capsys) -> None:
    import importlib.util

    from invoke import Config, Context
    from reliability_helpers import REPO

    spec = importlib.util.spec_from_file_location("project_tasks", REPO / "tasks.py")
    assert spec is not None and spec.loader is not None
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    tasks.verify(Context(Config()), demo=True, print_docker=True)
    line = capsys.readouterr().out.strip()
    # This checkout's content tag once built; :latest before (docker_executor.image_for).
    assert re.search(r" pcb-runtime:\S+ verify --run /results/demo$", line)
    assert "-v" in line and ":/results" in line


# ---------------------------------------------------------------- other backends


def test_ais_bench_dumps_damaged_are_inferred_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from ascend_helpers import make_run as make_npu_run
    from ascend_helpers import use_doubles

    from pcb.ascend.convert import convert_models
    from pcb.ascend.npu_infer import ais_infer

    use_doubles(monkeypatch)
    layout = make_npu_run(tmp_path / "run", {"query": 3, "gallery": 4})
    convert_models(layout, "310P3", [2], quiet=True)
    ais_infer(layout, "310P3", batch_size=2, quiet=True)
    folder = layout.dumps_dir("Ascend310P3-ais_bench", "query")
    victim = sorted(folder.glob("*.bin"))[1]
    clean = victim.read_bytes()
    overwrite(victim, keep_mtime=True)
    capsys.readouterr()
    ais_infer(layout, "310P3", batch_size=2, quiet=True)
    out = capsys.readouterr().out
    assert (
        f"query: 1 of 3 dumps did not match their recorded digest, redone: {victim.name} "
        "(ais_bench infers the whole split again)" in out
    )
    assert "gallery: all 4 dumps already complete" in out
    assert victim.read_bytes() == clean


def test_tensorrt_dumps_damaged_are_inferred_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from test_tensorrt_stages import DOUBLE, FakeBackend, add_bins

    from pcb.layout import RunLayout
    from pcb.tensorrt.stages import run_trt_infer

    monkeypatch.setenv("TRTEXEC_DOUBLE_CALLS", str(tmp_path / "calls.jsonl"))
    layout = RunLayout(tmp_path / "run")
    layout.model_dir.mkdir(parents=True)
    layout.onnx_path.write_bytes(b"stand-in onnx")
    add_bins(layout)

    def infer() -> str:
        capsys.readouterr()
        run_trt_infer(
            layout, batch_size=2, trtexec=str(DOUBLE), backend_factory=FakeBackend, quiet=False
        )
        return capsys.readouterr().out

    infer()
    victim = sorted(layout.dumps_dir("tensorrt-fp16", "gallery").glob("*.bin"))[3]
    clean = victim.read_bytes()
    overwrite(victim, keep_mtime=True)
    out = infer()
    assert f"gallery: 1 of 7 dumps did not match their recorded digest, redone: {victim.name}" in (
        out
    )
    assert "query: all 3 dumps already complete" in out
    assert victim.read_bytes() == clean and len(clean) == FEATURE_BYTES


# ---------------------------------------------------------------- the report's chain


def test_the_report_follows_a_figure_to_the_bins_it_came_from(
    clean: Path, tmp_path: Path, capsys
) -> None:
    """A damaged bin: the evaluation record itself and its dumps are untouched, but they
    were made from a bin that is no longer what preprocessing wrote."""
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    [victim] = picks(run, "bins/gallery", 1)
    assert victim.stat().st_size == INPUT_BYTES
    overwrite(victim, keep_mtime=True)
    notes = assert_report_refuses(capsys, run, [f"gallery/{victim.name}"])
    [note] = [n for n in notes if n.startswith("left out eval/onnxruntime.json")]
    assert "its input bins changed since stage infer/onnxruntime read it" in note
    assert not any("perf/onnxruntime.json" in n for n in notes)  # the model is unchanged


def test_a_report_of_a_run_copied_from_another_host_says_what_it_could_not_check(
    clean: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    data = manifest(run)
    for entry in data["stages"].values():
        dataset = (entry.get("inputs") or {}).get("dataset")
        if dataset:
            dataset["path"] = "/data/elsewhere/Market-1501-v15.09.15"
    (run / "manifest.json").write_text(json.dumps(data))
    code, out = cli(capsys, "report", "--run", run, "--no-plots")
    assert code == 0, out
    report = json.loads((run / "comparison.json").read_text())
    assert report["accuracy"]  # the figures stand
    assert any(
        "not re-checked by content" in n and "/data/elsewhere" in n and "not on this host" in n
        for n in report["notes"]
    )
