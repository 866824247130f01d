from __future__ import annotations

import os
import re
import sys
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pcb.demo as demo
from pcb.dataset import load_market
from pcb.demo import write_dataset, write_demo
from pcb.errors import PcbError

MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-6])s\d_\d{6}_\d{2}\.jpg$")
SPLITS = ("query", "bounding_box_test", "bounding_box_train")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("demo"), seed=0, identities=12)


@pytest.fixture
def fake_checkpoint(monkeypatch):
    """Stands in for pcb.checkpoint (torch) so these tests cover the images only."""
    calls = []

    def write_demo_checkpoint(path: Path, seed: int = 0) -> None:
        calls.append((path, seed))
        Path(path).write_bytes(b"fake checkpoint")

    module = types.ModuleType("pcb.checkpoint")
    module.write_demo_checkpoint = write_demo_checkpoint
    monkeypatch.setitem(sys.modules, "pcb.checkpoint", module)
    return calls


def files_of(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_names(demo_root):
    assert demo_root.name == "Market-1501-v15.09.15"
    for split in SPLITS:
        names = [p.name for p in (demo_root / split).iterdir()]
        assert names, split
        for name in names:
            assert MARKET_NAME.match(name), name
            with Image.open(demo_root / split / name) as image:
                assert image.format == "JPEG"
                assert image.mode == "RGB"
                assert image.size == (64, 128)
    every = [p.name for split in SPLITS for p in (demo_root / split).iterdir()]
    assert len(every) == len(set(every))
    assert not list(demo_root.parent.glob(".*.tmp"))


def test_junk_and_distractors_in_gallery(demo_root):
    gallery = [p.name for p in (demo_root / "bounding_box_test").iterdir()]
    assert sum(n.startswith("-1_") for n in gallery) >= 3
    assert sum(n.startswith("0000_") for n in gallery) >= 3
    assert not any(n.startswith(("-1_", "0000_")) for n in os.listdir(demo_root / "query"))


def test_protocol_properties(demo_root):
    market = load_market(demo_root)
    query, gallery = market["query"], market["gallery"]
    ids = {r.pid for r in query}
    assert len(ids) == 12
    assert 0 not in ids
    train_ids = {int(p.name[:4]) for p in (demo_root / "bounding_box_train").iterdir()}
    assert not train_ids & ids

    query_cams, gallery_cams = defaultdict(list), defaultdict(list)
    for r in query:
        query_cams[r.pid].append(r.camid)
    for r in gallery:
        gallery_cams[r.pid].append(r.camid)
    for pid in ids:
        assert len(query_cams[pid]) == 2
        assert len(set(query_cams[pid])) == 2, "queries come from different cameras"
        assert 4 <= len(gallery_cams[pid]) <= 6
        assert len(set(query_cams[pid]) | set(gallery_cams[pid])) >= 3
        # Same-camera gallery images exist, so the metric's exclusion is exercised...
        assert set(query_cams[pid]) & set(gallery_cams[pid])
        # ...and every query keeps a valid match after that exclusion.
        for cam in query_cams[pid]:
            assert any(c != cam for c in gallery_cams[pid])


def test_deterministic_for_a_seed(tmp_path, demo_root):
    again = write_dataset(tmp_path / "a", seed=0, identities=12)
    assert files_of(again) == files_of(demo_root)
    other = write_dataset(tmp_path / "b", seed=1, identities=12)
    assert files_of(other) != files_of(demo_root)


def _descriptor(path: Path) -> np.ndarray:
    # Mean colour of where the upper and lower body sit: a crude, network-free appearance cue.
    pixels = np.asarray(Image.open(path), dtype=np.float64)
    return np.concatenate([pixels[32:64, 20:44].mean((0, 1)), pixels[75:112, 20:44].mean((0, 1))])


def test_identities_differ_more_than_views_of_one(demo_root):
    market = load_market(demo_root)
    records = [r for r in market["query"] + market["gallery"] if r.pid > 0]
    features = np.stack([_descriptor(r.path) for r in records])
    pids = np.array([r.pid for r in records])
    distance = np.linalg.norm(features[:, None] - features[None], axis=-1)
    same = pids[:, None] == pids[None]
    off_diagonal = ~np.eye(len(records), dtype=bool)
    within = distance[same & off_diagonal].mean()
    between = distance[~same].mean()
    assert between > 3 * within
    # And nearest-neighbour retrieval on this cue is nearly perfect.
    np.fill_diagonal(distance, np.inf)
    assert (pids[distance.argmin(axis=1)] == pids).mean() > 0.9


def test_existing_current_folder_is_kept(tmp_path):
    root = write_dataset(tmp_path, seed=0, identities=3)
    image = next((root / "query").iterdir())
    mtime = image.stat().st_mtime_ns
    assert write_dataset(tmp_path, seed=0, identities=3) == root
    assert image.stat().st_mtime_ns == mtime


def test_existing_folder_from_other_settings_is_refused(tmp_path):
    write_dataset(tmp_path, seed=0, identities=3)
    with pytest.raises(PcbError) as error:
        write_dataset(tmp_path, seed=5, identities=3)
    assert str(tmp_path / "Market-1501-v15.09.15") in str(error.value)
    assert "delete" in str(error.value)


def test_real_dataset_is_never_overwritten(tmp_path):
    real = tmp_path / "Market-1501-v15.09.15"
    (real / "query").mkdir(parents=True)
    with pytest.raises(PcbError, match="is not a pcb demo folder"):
        write_dataset(tmp_path)
    assert list(real.iterdir()) == [real / "query"]


def test_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    def broken(folder: Path, seed: int, identities: int) -> None:
        (folder / "query").mkdir(parents=True)
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_generate", broken)
    with pytest.raises(RuntimeError):
        write_dataset(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("identities", [0, 1500])
def test_identities_out_of_range(tmp_path, identities):
    with pytest.raises(PcbError, match="identities must be"):
        write_dataset(tmp_path, identities=identities)


def test_write_demo_writes_dataset_checkpoint_and_readme(tmp_path, fake_checkpoint):
    paths = write_demo(tmp_path / "demo", seed=3, identities=4)
    assert paths.dataset_root == tmp_path / "demo" / "Market-1501-v15.09.15"
    assert paths.checkpoint == tmp_path / "demo" / "PCB_demo.pt"
    assert fake_checkpoint == [(paths.checkpoint, 3)]
    assert paths.checkpoint.read_bytes() == b"fake checkpoint"
    readme = (tmp_path / "demo" / "README.txt").read_text()
    assert "synthetic" in readme.lower()
    assert "UNTRAINED" in readme
    assert "not comparable" in readme
    assert len(load_market(paths.dataset_root)["query"]) == 8

    # A second run reuses everything.
    assert write_demo(tmp_path / "demo", seed=3, identities=4) == paths
    assert len(fake_checkpoint) == 1


# ---------------------------------------------------------------- Market-1501's size


def test_market_counts_at_full_scale_are_market_1501s() -> None:
    counts = demo.MarketCounts.at_scale(1.0)
    assert counts.identities == 750
    assert counts.query == 3368
    assert counts.gallery == 15913  # what the dataset stage keeps, junk dropped
    assert counts.bounding_box_test == 19732
    assert counts.junk == 3819 and counts.distractors == 2793


@pytest.mark.parametrize("scale", [0.0, -0.1, 1.5])
def test_market_scale_out_of_range(tmp_path, scale):
    with pytest.raises(PcbError, match="scale must be"):
        demo.write_market_scale_dataset(tmp_path, scale=scale)


def test_market_scale_dataset_scaled_down(tmp_path):
    scale = 0.02
    counts = demo.MarketCounts.at_scale(scale)
    root = demo.write_market_scale_dataset(tmp_path, seed=4, scale=scale)
    names = {split: sorted(p.name for p in (root / split).iterdir()) for split in SPLITS}
    assert all(MARKET_NAME.match(n) for split in names.values() for n in split)
    gallery = names["bounding_box_test"]
    assert len(names["query"]) == counts.query == round(3368 * scale)
    assert len(gallery) == counts.bounding_box_test
    assert sum(n.startswith("-1_") for n in gallery) == counts.junk == round(3819 * scale)
    assert sum(n.startswith("0000_") for n in gallery) == counts.distractors
    market = load_market(root)
    assert len(market["query"]) == counts.query
    assert len(market["gallery"]) == counts.gallery  # junk dropped
    assert len({r.pid for r in market["query"]}) == counts.identities == 15
    # One query per camera per identity, and for every query a gallery view of its identity
    # from another camera: each one is a valid query under the market1501 protocol.
    query_views = [(r.pid, r.camid) for r in market["query"]]
    assert len(set(query_views)) == len(query_views)
    gallery_cams = defaultdict(set)
    for record in market["gallery"]:
        gallery_cams[record.pid].add(record.camid)
    for pid, cam in query_views:
        assert gallery_cams[pid] - {cam}, (pid, cam)
    # Kept when current, refused when drawn otherwise.
    assert demo.write_market_scale_dataset(tmp_path, seed=4, scale=scale) == root
    with pytest.raises(PcbError, match="delete"):
        demo.write_market_scale_dataset(tmp_path, seed=4, scale=0.03)
