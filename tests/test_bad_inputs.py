"""Every bad input of issue 7, through the command line a user runs: a message that names the
input and the fix, a non-zero exit, and no partial output left behind.

Unit tests of the same checks live beside their modules (test_checkpoint, test_dataset,
test_preprocess, test_infer, test_evaluate, test_cli, test_pipeline, test_ascend_chips,
test_tensorrt_trtexec); this file holds the end-to-end view, one case per row of the issue.
The full disk is in test_disk_full.py, crafted pickles in test_untrusted_checkpoint.py.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from reliability_helpers import REPO, assert_nothing_half_written, manifest

from pcb.cli.main import main
from pcb.constants import FEATURE_BYTES, INPUT_BYTES, PCB_3_7_NAME
from pcb.demo import write_dataset

pytest.importorskip("onnxruntime")
from tiny_model import make_tiny_model  # noqa: E402


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def parse_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """An option argparse refuses: exit status 2 and its message."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=4, identities=4)


@pytest.fixture(scope="module")
def inferred(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run preprocessed and inferred with the tiny model: the stage inputs to break."""
    run = tmp_path_factory.mktemp("inferred") / "run"
    assert main(["preprocess", "--dataset", str(dataset), "--run", str(run), "--workers", "1"]) == 0
    make_tiny_model(run / "model" / "pcb.onnx")
    assert main(["infer", "--run", str(run), "--quiet"]) == 0
    return run


def copy_market(dataset: Path, tmp_path: Path) -> Path:
    """A copy of the small dataset to break; returns its Market root."""
    root = tmp_path / "data" / dataset.name
    shutil.copytree(dataset, root)
    return root


# ---------------------------------------------------------------- checkpoints (export)


def _missing(path: Path) -> None:
    pass


def _truncated(path: Path) -> None:
    from pcb.checkpoint import write_demo_checkpoint

    write_demo_checkpoint(path)
    path.write_bytes(path.read_bytes()[:3_000_000])


def _not_a_checkpoint(path: Path) -> None:
    path.write_text("<html>404 Not Found</html>\n")


def _other_architecture(path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, path)


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


CHECKPOINTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # case: (how to make it, what the message says, the fix it offers)
    "missing": (_missing, "not found", "data/README.md"),
    "truncated": (_truncated, "cannot read it as a PyTorch checkpoint", "download it again"),
    "empty": (_empty_file, "cannot read it as a PyTorch checkpoint", "download it again"),
    "not-a-checkpoint": (_not_a_checkpoint, "not a checkpoint", "download it again"),
    "other-architecture": (_other_architecture, "not a PCB checkpoint, missing", "Expected a PCB"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_bad_checkpoint(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, problem, fix = CHECKPOINTS[case]
    checkpoint = tmp_path / "PCB.pt"
    make(checkpoint)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "export", "--checkpoint", checkpoint, "--run", run)
    assert code == 1
    assert err.startswith(f"error: checkpoint {checkpoint}") or err.startswith(
        f"error: {checkpoint}"
    )
    assert problem in err and fix in err
    assert not run.exists()  # refused before any output: not even an empty run folder


def test_bad_checkpoint_into_an_existing_run_is_recorded_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = tmp_path / "PCB.pt"
    _not_a_checkpoint(checkpoint)
    code, _, _ = run_cli(capsys, "export", "--checkpoint", checkpoint, "--run", run)
    assert code == 1
    assert not (run / "model").exists()
    entry = manifest(run)["stages"]["export"]
    assert entry["status"] == "failed" and str(checkpoint) in entry["error"]


@pytest.mark.slow
def test_published_name_with_another_md5_warns_and_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pcb.checkpoint import write_demo_checkpoint

    checkpoint = write_demo_checkpoint(tmp_path / PCB_3_7_NAME)
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="differs from the published"):
        code, _, _ = run_cli(capsys, "export", "--checkpoint", checkpoint, "--run", run)
    assert code == 0
    assert (run / "model" / "pcb.onnx").is_file()
    assert manifest(run)["stages"]["export"]["status"] == "complete"


# ---------------------------------------------------------------- datasets (preprocess)


def _preprocess(capsys: pytest.CaptureFixture[str], data: Path, run: Path, *extra: str):
    return run_cli(capsys, "preprocess", "--dataset", data, "--run", run, "--workers", "1", *extra)


@pytest.mark.parametrize(
    ("case", "problem", "fix"),
    [
        ("root-missing", "does not exist", "data/README.md"),
        ("split-missing", "lacks", "incompletely unpacked"),
        ("split-empty", "holds no .jpg images", "re-download or re-unpack"),
        ("only-junk", "holds only junk images", "re-download or re-unpack"),
        ("root-is-a-file", "is a file, not a folder", "unpack the archive"),
    ],
)
def test_bad_dataset_layout(
    case: str,
    problem: str,
    fix: str,
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = copy_market(dataset, tmp_path)
    given = root.parent
    if case == "root-missing":
        given = tmp_path / "nowhere"
    elif case == "split-missing":
        shutil.rmtree(root / "bounding_box_test")
    elif case == "split-empty":
        shutil.rmtree(root / "query")
        (root / "query").mkdir()
    elif case == "only-junk":
        for path in (root / "query").glob("*.jpg"):
            path.rename(path.with_name("-1" + path.name[4:]))
    elif case == "root-is-a-file":
        given = tmp_path / "Market-1501-v15.09.15.zip"
        given.write_bytes(b"PK")
    run = tmp_path / "run"
    code, _, err = _preprocess(capsys, given, run)
    assert code == 1
    assert problem in err and fix in err
    assert not run.exists()


def _break_image(root: Path, how: str) -> Path:
    victim = sorted((root / "query").glob("*.jpg"))[3]
    if how == "zero-byte":
        victim.write_bytes(b"")
    elif how == "garbage":
        victim.write_bytes(b"\xff\xd8 this is not image data " * 20)
    elif how == "truncated":
        victim.write_bytes(victim.read_bytes()[:200])
    return victim


@pytest.mark.parametrize("how", ["zero-byte", "garbage", "truncated"])
def test_corrupt_image_stops_preprocessing_naming_it(
    how: str, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_market(dataset, tmp_path)
    victim = _break_image(root, how)
    run = tmp_path / "run"
    code, _, err = _preprocess(capsys, root.parent, run)
    assert code == 1
    assert str(victim) in err and "corrupt" in err and "re-download" in err
    assert "--skip-bad-images" in err
    # The bins made before it are whole (kept for the rerun); the split is not marked done.
    assert_nothing_half_written(run)
    assert not (run / "bins" / "query.info").exists()
    entry = manifest(run)["stages"]["preprocess"]
    assert entry["status"] == "failed" and victim.name in entry["error"]


def test_skip_bad_images_counts_lists_and_leaves_them_out(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_market(dataset, tmp_path)
    bad_query = _break_image(root, "zero-byte")
    bad_gallery = sorted((root / "bounding_box_test").glob("0*.jpg"))[5]
    bad_gallery.write_bytes(b"not a jpeg")
    run = tmp_path / "run"
    code, out, err = _preprocess(capsys, root.parent, run, "--skip-bad-images")
    assert code == 0, err
    total_query = len(list((root / "query").glob("*.jpg")))
    assert (
        f"query: found {total_query} files in {root / 'query'}: used {total_query - 1}, junk 0 "
        "dropped, skipped 1, ignored 0"
    ) in out
    assert f"query: skipped {bad_query.name} (corrupt): listed in " in out
    query = json.loads((run / "bins" / "query.skipped.json").read_text())
    assert query["count"] == 1 and query["images"][0]["name"] == bad_query.name
    assert "corrupt" in query["images"][0]["error"]
    gallery = json.loads((run / "bins" / "gallery.skipped.json").read_text())
    assert [i["name"] for i in gallery["images"]] == [bad_gallery.name]
    info = (run / "bins" / "query.info").read_text()
    assert bad_query.stem not in info
    assert not (run / "bins" / "query" / f"{bad_query.stem}.bin").exists()

    # Inference and evaluation use exactly the images that were preprocessed.
    make_tiny_model(run / "model" / "pcb.onnx")
    assert run_cli(capsys, "infer", "--run", run, "--quiet")[0] == 0
    code, out, err = run_cli(capsys, "evaluate", "--dataset", root.parent, "--run", run)
    assert code == 0, err
    record = json.loads((run / "eval" / "onnxruntime.json").read_text())
    assert record["num_query"] == total_query - 1
    assert record["skipped_images"] == {"query": [bad_query.name], "gallery": [bad_gallery.name]}
    assert "2 images skipped as unusable" in out

    # The report names them.
    assert run_cli(capsys, "report", "--run", run, "--no-plots")[0] == 0
    report = (run / "report.md").read_text()
    assert "2 images skipped as unusable" in report and bad_query.name in report

    # Without the flag the same images stop the stage again: skipping is never silent.
    code, _, err = _preprocess(capsys, root.parent, run)
    assert code == 1 and bad_query.name in err


def test_non_market_file_name(dataset: Path, tmp_path: Path, capsys) -> None:
    root = copy_market(dataset, tmp_path)
    odd = root / "query" / "IMG_20240101_1200.jpg"
    shutil.copy(next((root / "query").glob("*.jpg")), odd)
    run = tmp_path / "run"
    code, _, err = _preprocess(capsys, root.parent, run)
    assert code == 1
    assert str(odd) in err and "not named like a Market-1501 image" in err and "rename" in err
    assert not run.exists()


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA-png-named-jpg", "P-png-named-jpg"])
def test_non_rgb_images_are_converted(
    mode: str, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_market(dataset, tmp_path)
    victim = sorted((root / "query").glob("*.jpg"))[0]
    with Image.open(victim) as image:
        rgb = image.convert("RGB")
    if mode in ("L", "CMYK"):
        rgb.convert(mode).save(victim, "JPEG")
    else:
        rgb.convert(mode.split("-")[0]).save(victim, "PNG")
    run = tmp_path / "run"
    code, _, err = _preprocess(capsys, root.parent, run)
    assert code == 0, err
    assert (run / "bins" / "query" / f"{victim.stem}.bin").stat().st_size == INPUT_BYTES


# ---------------------------------------------------------------- bins and dumps


def _copy_run(inferred: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(inferred, run)
    return run


def test_bin_of_the_wrong_size(inferred: Path, tmp_path: Path, capsys) -> None:
    run = _copy_run(inferred, tmp_path)
    shutil.rmtree(run / "dumps")
    victim = sorted((run / "bins" / "gallery").glob("*.bin"))[2]
    victim.write_bytes(victim.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "infer", "--run", run, "--quiet")
    assert code == 1
    assert str(victim) in err and "1000 bytes" in err and "re-run `pcb preprocess`" in err
    victim.unlink()  # the broken input itself; every output must be whole
    assert_nothing_half_written(run)
    assert manifest(run)["stages"]["infer/onnxruntime"]["status"] == "failed"


def _break_dumps(run: Path, how: str) -> str:
    dumps = sorted((run / "dumps" / "onnxruntime" / "query").glob("*_0.bin"))
    victim = dumps[1]
    if how == "wrong-size":
        victim.write_bytes(victim.read_bytes()[: FEATURE_BYTES // 2])
        return f"{victim.name} ({FEATURE_BYTES // 2} bytes)"
    if how == "missing":
        victim.unlink()
        return f"images with no dump <stem>_0.bin, <stem>_1.bin or <stem>.bin 1: {victim.stem[:-2]}"
    if how == "extra":
        shutil.copy(victim, victim.with_name("9999_c1s1_000001_00_0.bin"))
        return "dumps that match no image 1: 9999_c1s1_000001_00_0.bin"
    values = np.fromfile(victim, dtype=np.float32)
    values[7] = np.nan if how == "nan" else np.inf
    values.tofile(victim)
    return f"hold NaN or Inf, 1: {victim.name}"


@pytest.mark.parametrize("how", ["wrong-size", "missing", "extra", "nan", "inf"])
def test_bad_dumps_stop_the_evaluation(
    how: str, inferred: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(inferred, tmp_path)
    detail = _break_dumps(run, how)
    code, _, err = run_cli(capsys, "evaluate", "--dataset", dataset.parent, "--run", run)
    assert code == 1
    assert detail in err and "re-run" in err.lower()
    assert not (run / "eval").exists()  # no evaluation record from broken dumps
    assert manifest(run)["stages"]["evaluate/onnxruntime"]["status"] == "failed"


def test_dataset_and_dumps_of_different_sizes(
    inferred: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_dataset(tmp_path / "other", seed=4, identities=6)
    run = _copy_run(inferred, tmp_path)
    code, _, err = run_cli(capsys, "evaluate", "--dataset", other.parent, "--run", run)
    assert code == 1
    assert "do not match the" in err and "images with no dump" in err
    assert not (run / "eval").exists()


# ---------------------------------------------------------------- options and settings


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "--run", "r", "--chip", "910B"], "unknown Ascend chip '910B'"),
        (["infer", "--run", "r", "--backend", "ais_bench", "--chip", "x"], "unknown Ascend chip"),
        (["infer", "--run", "r", "--batch-size", "0"], "expected a positive integer, got 0"),
        (["infer", "--run", "r", "--batch-size", "-4"], "expected a positive integer, got -4"),
        (["infer", "--run", "r", "--batch-size", "2.5"], "expected a positive integer, got '2.5'"),
        (["perf", "--run", "r", "--batch-sizes", "1,0"], "batch size 0 is not positive"),
        (["perf", "--run", "r", "--batch-sizes", "1,x"], "batch size 'x' is not an integer"),
        (["infer", "--run", "r", "--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
        (["trt-perf", "--run", "r", "--precision", "fp8"], "invalid choice: 'fp8'"),
    ],
)
def test_bad_option_is_refused_before_anything_runs(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = parse_error(capsys, *args)
    assert message in err
    assert not Path("r").exists()


@pytest.fixture(scope="module")
def tasks() -> ModuleType:
    """The project's tasks.py, loaded as invoke loads it."""
    spec = importlib.util.spec_from_file_location("project_tasks", REPO / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"batch_size": 8}, "unknown key(s) under pcb: batch_size; known keys"),
        ({"batch_sizes": [0, 4]}, "pcb.batch_sizes = 0: expected an integer >= 1"),
        ({"infer_batch_size": 2.5}, "pcb.infer_batch_size = 2.5"),
        ({"chip": "910"}, "unknown Ascend chip"),
        ({"trt_precision": "fp8"}, "pcb.trt_precision = 'fp8'"),
        ({"executor": "k8s"}, "pcb.executor = 'k8s'"),
    ],
)
def test_bad_invoke_yaml_is_refused_by_every_task(
    config: dict, message: str, tasks: ModuleType
) -> None:
    from invoke import Config, Context, Exit

    context = Context(Config(overrides={"pcb": config}))
    with pytest.raises(Exit) as exit_info:
        tasks.preprocess(context, print_docker=True)
    assert exit_info.value.code == 1
    assert message in str(exit_info.value.message)


def test_damaged_manifest_is_set_aside_and_the_stage_runs_again(
    inferred: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(inferred, tmp_path)
    damaged = '{"schema": 1, "stages": '
    (run / "manifest.json").write_text(damaged)
    code, _, err = run_cli(capsys, "infer", "--run", run, "--quiet")
    assert code == 0, err
    assert f"{run / 'manifest.json'} is not whole JSON" in err
    assert f"kept aside as {run / 'manifest.json.bad'}" in err
    assert (run / "manifest.json.bad").read_text() == damaged
    assert manifest(run)["stages"]["infer/onnxruntime"]["status"] == "complete"


def test_run_folder_that_is_a_file(tmp_path: Path, dataset: Path, capsys) -> None:
    run = tmp_path / "run"
    run.write_text("not a folder")
    code, _, err = _preprocess(capsys, dataset.parent, run)
    assert code == 1
    assert f"run folder {run} is a file" in err
    assert run.read_text() == "not a folder"
