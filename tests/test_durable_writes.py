"""Crash safety (issue 11, part 5): a record is on the disk before its rename is, and the
per-image bins and dumps are synced before anything says they are complete.

A power cut cannot be staged in a test; what can be checked is that the calls the kernel
needs are made, in the order that makes them work: fsync of the data, the rename, fsync of
the folder holding the new name; and one syncfs of the run's file system before the
manifest (or a split's .info list) vouches for the files.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from reliability_helpers import manifest

from pcb import fileio
from pcb.cli.main import main
from pcb.demo import write_dataset
from pcb.errors import PcbError
from pcb.fileio import atomic_write_bytes, atomic_write_json, sync_folder


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync (with the path of what it syncs) and rename, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", _fd_path(fd)))
        real_fsync(fd)

    def replace(source, target) -> None:
        events.append(("rename", str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_a_record_is_synced_then_renamed_then_its_folder_synced(tmp_path, calls) -> None:
    target = tmp_path / "run" / "manifest.json"
    atomic_write_json(target, {"schema": 1})
    assert [kind for kind, _ in calls] == ["fsync", "rename", "fsync"]
    synced_file, renamed, synced_folder = (path for _, path in calls)
    # The data of the temporary file, under its temporary name, before the rename...
    assert Path(synced_file).parent == target.parent
    assert Path(synced_file).name.startswith(".manifest.json.")
    assert renamed == str(target)
    # ...and the folder after it, which makes the new name itself durable.
    assert synced_folder == str(target.parent)
    assert json.loads(target.read_text()) == {"schema": 1}


def test_a_per_image_file_is_written_without_an_fsync(tmp_path, calls) -> None:
    atomic_write_bytes(tmp_path / "x.bin", b"\0" * 16, durable=False)
    assert [kind for kind, _ in calls] == ["rename"]
    assert (tmp_path / "x.bin").read_bytes() == b"\0" * 16


def _paths_given_to(name: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """fileio's function `name`, still called, with the path of each fd it gets recorded."""
    paths: list[str] = []
    real = getattr(fileio, name)

    def record(fd: int) -> bool:
        paths.append(_fd_path(fd))
        return real(fd)

    monkeypatch.setattr(fileio, name, record)
    return paths


def test_a_per_image_file_starts_its_write_back_without_waiting(tmp_path, monkeypatch) -> None:
    started = _paths_given_to("start_writeback", monkeypatch)
    atomic_write_bytes(tmp_path / "x.bin", b"\0" * 590_000, durable=False)
    atomic_write_bytes(tmp_path / "record.json", b"{}")  # fsynced: nothing to start
    [temporary] = started
    assert Path(temporary).name.startswith(".x.bin.") and temporary.endswith(".tmp")


def test_the_real_sync_file_range_answers(tmp_path) -> None:
    with open(tmp_path / "x.bin", "wb") as handle:
        handle.write(b"\1" * 100_000)
        handle.flush()
        assert fileio.start_writeback(handle.fileno()) is True
    assert fileio.start_writeback(-1) is False  # EBADF: refused, and nothing raised


def test_the_mode_is_set_before_the_data_is_synced(tmp_path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    target = tmp_path / "r.json"
    atomic_write_json(target, {})
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_full_disk_at_fsync_leaves_no_temporary_file(tmp_path, monkeypatch) -> None:
    # Delayed allocation reports a full disk when the data is flushed: at the fsync.
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(PcbError, match="no space left on the device holding"):
        atomic_write_json(tmp_path / "manifest.json", {"schema": 1})
    assert list(tmp_path.iterdir()) == []


def test_sync_folder_is_one_syncfs_of_the_file_system(tmp_path, monkeypatch) -> None:
    synced = _paths_given_to("_syncfs", monkeypatch)
    sync_folder(tmp_path)
    assert synced == [str(tmp_path)]


def test_sync_folder_falls_back_to_sync_without_syncfs(tmp_path, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(fileio, "_syncfs", lambda fd: False)
    monkeypatch.setattr(os, "sync", lambda: calls.append("sync"))
    sync_folder(tmp_path)
    assert calls == ["sync"]


@pytest.mark.parametrize(
    ("code", "message"),
    [(errno.EIO, "writing to the disk holding"), (errno.ENOSPC, "no space left on the device")],
)
def test_a_failed_write_back_is_a_clear_error(tmp_path, monkeypatch, code, message) -> None:
    def failing(fd: int) -> bool:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fileio, "_syncfs", failing)
    with pytest.raises(PcbError, match=message) as error:
        sync_folder(tmp_path)
    assert str(tmp_path) in str(error.value) and "run the same command again" in str(error.value)


def test_the_real_syncfs_answers(tmp_path) -> None:
    # The C library's syncfs exists here (glibc), succeeds on a real folder.
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fileio._syncfs(fd) is True
    finally:
        os.close(fd)


# ---------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=2, identities=2)


def test_preprocess_syncs_the_bins_before_the_info_list_and_the_manifest(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    seen: list[tuple[str, int, bool, str]] = []
    real = fileio.sync_folder

    def record(folder: Path) -> None:
        # What exists when the sync is asked for: bins yes, the split's .info not yet, and
        # the manifest still says running.
        folder = Path(folder)
        split = folder.name if folder.parent.name == "bins" else ""
        info = run / "bins" / f"{split}.info"
        state = manifest(run)["stages"]["preprocess"]["status"]
        seen.append((str(folder), len(list(folder.glob("*.bin"))), info.exists(), state))
        real(folder)

    monkeypatch.setattr(fileio, "sync_folder", record)
    monkeypatch.setattr("pcb.preprocess.sync_folder", record)
    args = ["preprocess", "--dataset", str(dataset), "--run", str(run), "--workers", "1"]
    assert main([*args, "--quiet"]) == 0
    query, gallery, stage = seen
    assert query[0] == str(run / "bins" / "query") and query[1] > 0
    assert gallery[0] == str(run / "bins" / "gallery") and gallery[1] > 0
    assert query[2:] == gallery[2:] == (False, "running")
    # The stage's own sync, after everything it wrote and before it is recorded complete.
    assert stage[0] == str(run) and stage[3] == "running"
    assert manifest(run)["stages"]["preprocess"]["status"] == "complete"

    # Every bin already whole (the manifest gone, so the stage runs): no bins to sync
    # before the .info lists, the stage's own sync all the same.
    seen.clear()
    (run / "manifest.json").unlink()
    assert main([*args, "--quiet"]) == 0
    assert [s[0] for s in seen] == [str(run)]


def test_inference_dumps_are_synced_before_the_stage_is_recorded_complete(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    from tiny_model import make_tiny_model

    run = tmp_path / "run"
    assert main(["preprocess", "--dataset", str(dataset), "--run", str(run), "--quiet"]) == 0
    make_tiny_model(run / "model" / "pcb.onnx")
    fsyncs: list[str] = []
    seen: list[tuple[str, str, int]] = []
    real_fsync, real_sync = os.fsync, fileio.sync_folder

    def fsync(fd: int) -> None:
        fsyncs.append(_fd_path(fd))
        real_fsync(fd)

    def record(folder: Path) -> None:
        dumps = run / "dumps" / "onnxruntime"
        entry = manifest(run)["stages"]["infer/onnxruntime"]
        seen.append((str(folder), entry["status"], len(list(dumps.rglob("*.bin")))))
        real_sync(folder)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(fileio, "sync_folder", record)
    assert main(["infer", "--run", str(run), "--quiet"]) == 0
    dumps = sorted((run / "dumps" / "onnxruntime").rglob("*_0.bin"))
    assert dumps
    # No dump was fsynced on its own; all were on the disk before the stage was complete.
    assert not any(path.endswith("_0.bin") or "_0.bin." in path for path in fsyncs)
    assert seen == [(str(run), "running", len(dumps))]
    assert manifest(run)["stages"]["infer/onnxruntime"]["status"] == "complete"


def test_the_write_back_flag_is_the_kernels() -> None:
    # Linux's include/uapi/linux/fs.h: `#define SYNC_FILE_RANGE_WRITE 2`; installed here as
    # /usr/include/linux/fs.h by linux-libc-dev.
    header = Path("/usr/include/linux/fs.h")
    if not header.is_file():
        pytest.skip("no kernel headers here (linux-libc-dev)")
    import re

    [value] = re.findall(r"#define\s+SYNC_FILE_RANGE_WRITE\s+(\d+)", header.read_text())
    assert int(value) == fileio.SYNC_FILE_RANGE_WRITE
