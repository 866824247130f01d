"""Content digests and the cache that spares re-reading unchanged files; per-split digest
records; folder fingerprints by content and the listings that name changed files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pcb.record.digest
from pcb.record.digest import (
    ALGORITHM,
    CACHE_DIR,
    DIGEST_BYTES,
    DigestStore,
    bytes_digest,
    file_digest,
    file_digests,
)
from pcb.record.digest_records import (
    DAMAGED,
    MISSING,
    SOURCE,
    UNRECORDED,
    SplitDigests,
    check_files,
    describe_redo,
)
from pcb.record.fingerprint import (
    TREES_DIR,
    load_listing,
    prune_listings,
    tree_changes,
    tree_fingerprint,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "real"


def helper_digest(path: Path) -> str:
    """The digest the transfer helper lists for a file, its program run as on a far engine."""
    from pcb.orchestration.transfer import HELPER

    listfile = path.with_name(path.name + ".list")
    listfile.write_text(json.dumps([str(path)]))
    listed = subprocess.run(
        [sys.executable, "-c", HELPER, "list", str(listfile)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(listed)[str(path)][1]


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Other bytes of the same size into the same inode, the old mtime set back: what
    size + mtime (+ inode) cannot see."""
    stat = path.stat()
    assert len(data) == stat.st_size
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ino,
    )


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the digest code reads; changes are taken as long past (no racy window)."""
    seen: list[Path] = []

    def counting(path: Path, md5: bool = False):
        seen.append(Path(path))
        return file_digests(path, md5)

    monkeypatch.setattr(pcb.record.digest, "file_digests", counting)
    monkeypatch.setattr(pcb.record.digest, "RACY_NS", 0)
    return seen


def test_the_digest_is_blake3_cut_to_128_bits_on_the_published_vectors(tmp_path: Path) -> None:
    """BLAKE3's own test vectors (tests/fixtures/real/blake3_test_vectors.json, verbatim from
    BLAKE3-team/BLAKE3): the digest is the first 16 bytes of each case's output, from bytes in
    memory, from a file, and with the transfer helper's program on the far side."""
    vectors = json.loads((FIXTURES / "blake3_test_vectors.json").read_text())
    assert ALGORITHM == "blake3-128"
    for case in vectors["cases"]:
        data = bytes(i % 251 for i in range(case["input_len"]))
        path = tmp_path / f"{case['input_len']}.bin"
        path.write_bytes(data)
        expected = case["hash"][: 2 * DIGEST_BYTES]
        assert bytes_digest(data) == file_digest(path) == expected, case["input_len"]
        assert helper_digest(path) == expected
    path = tmp_path / "pcb.bin"
    path.write_bytes(b"pcb" * 1000)
    assert file_digests(path, md5=True)[1] == hashlib.md5(b"pcb" * 1000).hexdigest()


def test_an_unchanged_file_is_read_once(tmp_path: Path, reads: list[Path]) -> None:
    run = tmp_path / "run"
    path = run / "bins" / "a.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 4096)
    store = DigestStore(run)
    first = store.digest(path)
    assert store.digest(path) == first and reads == [path]
    store.save()
    assert list((run / CACHE_DIR).glob("*.json"))
    # A new process: the cache on disk, not the file, gives the digest.
    assert DigestStore(run).digest(path) == first and reads == [path]


def test_a_same_size_rewrite_with_the_mtime_set_back_is_seen(
    tmp_path: Path, reads: list[Path]
) -> None:
    path = tmp_path / "run" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"a" * 4096)
    store = DigestStore(tmp_path / "run")
    before = store.digest(path)
    store.save()
    rewrite_in_place(path, b"b" * 4096)  # ctime moves: no program can set it back
    again = DigestStore(tmp_path / "run")
    assert again.digest(path) == file_digest(path) != before
    assert again.md5(path) == hashlib.md5(b"b" * 4096).hexdigest()


def test_a_file_changed_moments_ago_is_not_remembered(tmp_path: Path) -> None:
    path = tmp_path / "run" / "fresh.bin"
    path.parent.mkdir()
    path.write_bytes(b"new")
    store = DigestStore(tmp_path / "run")
    assert store.digest(path) == bytes_digest(b"new")
    store.save()
    assert not (tmp_path / "run" / CACHE_DIR).exists()  # racy: the next process reads it


def test_what_a_stage_wrote_is_not_read_back(tmp_path: Path, reads: list[Path]) -> None:
    path = tmp_path / "run" / "dump.bin"
    path.parent.mkdir()
    path.write_bytes(b"feature")
    store = DigestStore(tmp_path / "run")
    store.remember(path, bytes_digest(b"feature"))
    store.save()
    assert DigestStore(tmp_path / "run").digest(path) == bytes_digest(b"feature")
    assert reads == []
    path.write_bytes(b"FEATURE")  # damaged after: read and hashed again
    assert DigestStore(tmp_path / "run").digest(path) == bytes_digest(b"FEATURE")
    assert reads == [path]


def test_folders_in_the_run_are_keyed_by_their_place_in_it(tmp_path: Path) -> None:
    """The host and a container mount the run at different paths: one cache for both."""
    one = DigestStore(tmp_path / "host" / "run")
    other = DigestStore(tmp_path / "container" / "results")
    for store in (one, other):
        (store.root / "bins" / "query").mkdir(parents=True)
    assert (
        one._folder(one.root / "bins" / "query").key
        == other._folder(other.root / "bins" / "query").key
        == "run:bins/query"
    )
    outside = one._folder(tmp_path).key
    assert outside == f"abs:{tmp_path.resolve()}"


def test_a_cache_that_cannot_be_written_costs_only_reading(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".pcb").write_text("not a folder")  # the cache folder cannot be made
    path = run / "a.bin"
    path.write_bytes(b"a")
    store = DigestStore(run)
    store.remember(path, bytes_digest(b"a"))
    store.save()  # no error
    assert DigestStore(run).digest(path) == bytes_digest(b"a")


def test_many_files_are_hashed_in_parallel_to_the_same_digests(tmp_path: Path) -> None:
    paths = []
    for index in range(40):
        path = tmp_path / f"{index}.bin"
        path.write_bytes(os.urandom(70_000))
        paths.append((path, path.stat()))
    assert DigestStore(None).digests(paths) == [file_digest(p) for p, _ in paths]


# ---------------------------------------------------------------- per-split records


def test_a_split_record_is_compact_and_round_trips(tmp_path: Path) -> None:
    record = SplitDigests(tmp_path / "bins" / "query.digests.json", model="m" * 32)
    record.put("a.bin", "1" * 32, "2" * 32)
    record.write()
    text = record.path.read_text()
    assert "\n" not in text.strip() and " " not in text  # one line, no padding
    again = SplitDigests.load(record.path)
    assert again.files == {"a.bin": ("1" * 32, "2" * 32)} and again.model == "m" * 32
    assert again.folder == tmp_path / "bins" / "query"
    record.path.write_text("{broken")
    assert SplitDigests.load(record.path).files == {}
    record.path.write_text(json.dumps({"algorithm": "md5", "files": {"a.bin": ["1", "2"]}}))
    assert SplitDigests.load(record.path).files == {}  # another digest: nothing vouched for


def test_a_split_record_is_flushed_while_files_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pcb.record.digest_records.FLUSH_S", 3600.0)
    record = SplitDigests(tmp_path / "query.digests.json")
    assert record.flush()  # the first call writes
    record.put("a.bin", "1", "2")
    assert not record.flush() and SplitDigests.load(record.path).files == {}
    monkeypatch.setattr("pcb.record.digest_records.FLUSH_S", 0.0)
    assert record.flush() and SplitDigests.load(record.path).files == {"a.bin": ("1", "2")}


def test_a_file_is_kept_only_with_its_digest_and_source(tmp_path: Path) -> None:
    record = SplitDigests(tmp_path / "query.digests.json")
    record.folder.mkdir()
    for name in ("kept", "damaged", "resized", "unrecorded", "source"):
        (record.folder / f"{name}.bin").write_bytes(b"four")
        record.put(f"{name}.bin", bytes_digest(b"four"), "image")
    record.put("missing.bin", bytes_digest(b"four"), "image")
    del record.files["unrecorded.bin"]
    rewrite_in_place(record.folder / "damaged.bin", b"FOUR")
    (record.folder / "resized.bin").write_bytes(b"five!")
    names = ["kept.bin", "damaged.bin", "resized.bin", "unrecorded.bin", "source.bin"]
    names.append("missing.bin")
    sources = {name: "image" for name in names} | {"source.bin": "another image"}
    reuse = check_files(record, names, sources, 4, DigestStore(None))
    assert reuse.kept == ["kept.bin"]
    assert reuse.redo == {
        DAMAGED: ["damaged.bin", "resized.bin"],
        UNRECORDED: ["unrecorded.bin"],
        SOURCE: ["source.bin"],
        MISSING: ["missing.bin"],
    }
    assert reuse.pending == names[1:]  # in the order given
    lines = describe_redo("query", reuse, "bin", "image")
    assert lines == [
        "query: 2 of 6 bins did not match their recorded digest, redone: damaged.bin, resized.bin",
        "query: 1 of 6 bins had no recorded digest (written by an interrupted or older run), "
        "redone: unrecorded.bin",
        "query: 1 of 6 bins were made from images that changed since, redone: source.bin",
    ]


# ---------------------------------------------------------------- folder listings


def test_a_recorded_folder_names_each_file_that_changed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    folder = run / "dumps"
    (folder / "query").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (folder / "query" / f"{name}_0.bin").write_bytes(name.encode() * 8)
    recorded = tree_fingerprint(folder, run, keep=True)
    assert recorded["content"] == ALGORITHM
    assert load_listing(run, recorded["digest"]) is not None
    rewrite_in_place(folder / "query" / "a_0.bin", b"z" * 8)
    (folder / "query" / "b_0.bin").unlink()
    (folder / "query" / "d_0.bin").write_bytes(b"d")
    changes = tree_changes(folder, recorded, run, DigestStore(None))
    assert [(c.name, c.expected, c.found) for c in changes or []] == [
        ("query/a_0.bin", bytes_digest(b"a" * 8), bytes_digest(b"z" * 8)),
        ("query/b_0.bin", bytes_digest(b"b" * 8), None),
        ("query/d_0.bin", None, bytes_digest(b"d")),
    ]


def test_a_listing_is_believed_only_when_it_hashes_to_the_recorded_digest(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "bins").mkdir(parents=True)
    (run / "bins" / "a.bin").write_bytes(b"a")
    recorded = tree_fingerprint(run / "bins", run, keep=True)
    listing = run / TREES_DIR / f"{recorded['digest']}.json"
    payload = json.loads(listing.read_text())
    payload["files"]["a.bin"][1] = "0" * 32  # edited to hide a change
    listing.write_text(json.dumps(payload))
    assert load_listing(run, recorded["digest"]) is None


def test_listings_no_manifest_refers_to_are_removed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "bins").mkdir(parents=True)
    (run / "bins" / "a.bin").write_bytes(b"a")
    old = tree_fingerprint(run / "bins", run, keep=True)
    (run / "bins" / "a.bin").write_bytes(b"b")
    new = tree_fingerprint(run / "bins", run, keep=True)
    prune_listings(run, {"stages": {"preprocess": {"outputs": {"bins": new}}}})
    assert load_listing(run, new["digest"]) is not None
    assert load_listing(run, old["digest"]) is None
