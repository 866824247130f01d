"""The evaluate stage: dump discovery and loading, feature ranking, the run's eval JSON."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pcb.constants import FEATURE_BYTES, FEATURE_DIM
from pcb.errors import PcbError
from pcb.evaluate import evaluate_features, evaluate_run, load_features
from pcb.layout import RunLayout


@dataclass(frozen=True)
class Record:
    """Stands in for pcb.dataset.ImageRecord: the evaluate stage reads only these fields."""

    path: Path
    stem: str
    pid: int
    camid: int


def record(pid: int, camid: int, index: int = 0) -> Record:
    stem = f"{pid:04d}_c{camid}s1_{index:06d}_00"
    return Record(Path(f"{stem}.jpg"), stem, pid, camid)


def feature(x: float) -> np.ndarray:
    """A 12288-d feature at position x on the first axis: squared distances are (x - y)^2."""
    row = np.zeros(FEATURE_DIM, dtype=np.float32)
    row[0] = x
    return row


def write_dumps(folder: Path, records, features, suffix: str = "_0.bin") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # Written in reverse so that loading must follow the records, not the directory order.
    for rec, row in reversed(list(zip(records, features))):
        np.asarray(row, dtype=np.float32).tofile(folder / f"{rec.stem}{suffix}")


RECORDS = [record(1, 1), record(2, 3, 1), record(0, 2, 2)]
FEATURES = np.random.default_rng(0).standard_normal((3, FEATURE_DIM)).astype(np.float32)


@pytest.mark.parametrize("suffix", ["_0.bin", "_1.bin", ".bin"])
def test_loads_each_naming_scheme_in_record_order(tmp_path, suffix):
    write_dumps(tmp_path, RECORDS, FEATURES, suffix)
    (tmp_path / "sumary.json").write_text("{}")  # ais_bench's summary: not a dump
    loaded = load_features(tmp_path, RECORDS)
    assert loaded.dtype == np.float32
    assert loaded.shape == (3, FEATURE_DIM)
    np.testing.assert_array_equal(loaded, FEATURES)


def test_loads_mixed_schemes(tmp_path):
    for rec, row, suffix in zip(RECORDS, FEATURES, ["_0.bin", "_1.bin", ".bin"]):
        row.tofile(tmp_path / f"{rec.stem}{suffix}")
    np.testing.assert_array_equal(load_features(tmp_path, RECORDS), FEATURES)


def test_descends_into_the_ais_bench_timestamp_folder(tmp_path):
    write_dumps(tmp_path / "2024_05_01-12_30_00", RECORDS, FEATURES)
    (tmp_path / "2024_05_01-12_30_00_summary.json").write_text("{}")
    np.testing.assert_array_equal(load_features(tmp_path, RECORDS), FEATURES)


def test_wrong_size_names_file_size_and_expected_size(tmp_path):
    write_dumps(tmp_path, RECORDS, FEATURES)
    FEATURES[1, :100].tofile(tmp_path / f"{RECORDS[1].stem}_0.bin")
    with pytest.raises(PcbError) as error:
        load_features(tmp_path, RECORDS)
    message = str(error.value)
    assert f"{RECORDS[1].stem}_0.bin (400 bytes)" in message
    assert str(FEATURE_BYTES) in message
    assert str(tmp_path) in message


def test_missing_and_extra_dumps_are_listed_in_one_error(tmp_path):
    records = [record(1, 1, i) for i in range(15)]
    write_dumps(tmp_path, records[:2], FEATURES[:2])
    FEATURES[0].tofile(tmp_path / "9999_c1s1_000000_00_0.bin")
    with pytest.raises(PcbError) as error:
        load_features(tmp_path, records)
    message = str(error.value)
    # 13 missing: the first 10 named, then the count of the rest.
    assert "with no dump" in message
    assert "13: " in message
    assert records[2].stem in message
    assert records[11].stem in message
    assert records[12].stem not in message
    assert "and 3 more" in message
    assert "match no image 1: 9999_c1s1_000000_00_0.bin" in message
    assert "python -m pcb infer" in message


def test_two_dumps_for_one_image_is_an_error(tmp_path):
    write_dumps(tmp_path, RECORDS, FEATURES, "_0.bin")
    FEATURES[0].tofile(tmp_path / f"{RECORDS[0].stem}.bin")
    with pytest.raises(PcbError, match="more than one dump"):
        load_features(tmp_path, RECORDS)


def test_non_finite_features_name_the_files(tmp_path):
    bad = FEATURES.copy()
    bad[0, 5] = np.nan
    bad[2, 7] = np.inf
    write_dumps(tmp_path, RECORDS, bad)
    with pytest.raises(PcbError) as error:
        load_features(tmp_path, RECORDS)
    message = str(error.value)
    assert "NaN or Inf" in message
    assert f"{RECORDS[0].stem}_0.bin" in message
    assert f"{RECORDS[2].stem}_0.bin" in message
    assert f"{RECORDS[1].stem}_0.bin" not in message


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(PcbError, match="does not exist.*pcb infer"):
        load_features(tmp_path / "nowhere", RECORDS)


# A two-query problem worked by hand (features on one axis, distances are squared gaps):
#   q0 pid 1 cam 1 at x=0; q1 pid 2 cam 2 at x=10.
#   gallery: a pid 1 cam 2 x=1 | b pid 0 cam 3 x=0.5 | c pid 2 cam 1 x=10 | d pid 1 cam 1 x=0
# q0: d (0, same pid and camera: dropped), b (0.25, distractor), a (1, match), c (100)
#     -> first match at rank 2, AP 1/2.
# q1: c (0, match), a (81), b (90.25), d (100) -> rank 1, AP 1.
# top-1 = 1/2, top-5 = top-10 = 1, mAP = 3/4.
QUERY = [record(1, 1, 0), record(2, 2, 1)]
GALLERY = [record(1, 2, 2), record(0, 3, 3), record(2, 1, 4), record(1, 1, 5)]
QF = np.stack([feature(0), feature(10)])
GF = np.stack([feature(1), feature(0.5), feature(10), feature(0)])


def test_evaluate_features_hand_case():
    result = evaluate_features(QF, GF, QUERY, GALLERY, max_rank=10)
    assert result.cmc.tolist() == [0.5] + [1.0] * 9
    assert result.ap.tolist() == pytest.approx([0.5, 1.0])
    assert result.mAP == pytest.approx(0.75)


def test_evaluate_features_checks_rows_against_records():
    with pytest.raises(PcbError, match="gallery features have shape"):
        evaluate_features(QF, GF[:3], QUERY, GALLERY)


@pytest.fixture
def fake_dataset(monkeypatch, tmp_path):
    """pcb.dataset replaced by a module serving the hand-worked records."""
    root = tmp_path / "data"
    found = root / "Market-1501-v15.09.15"
    module = types.ModuleType("pcb.dataset")

    def find_market_root(path):
        assert Path(path) == root
        return found

    def load_split(path, split, allowed=()):
        assert path == found and not allowed
        return {"query": QUERY, "gallery": GALLERY}[split]

    module.find_market_root = find_market_root
    module.load_split = load_split
    monkeypatch.setitem(sys.modules, "pcb.dataset", module)
    return root


def test_evaluate_run_writes_the_eval_json(tmp_path, fake_dataset, capsys):
    layout = RunLayout(tmp_path / "run")
    write_dumps(layout.dumps_dir("onnxruntime", "query"), QUERY, QF)
    write_dumps(layout.dumps_dir("onnxruntime", "gallery"), GALLERY, GF)

    summary = evaluate_run(fake_dataset, layout)

    written = json.loads(layout.eval_path("onnxruntime").read_text())
    assert written == summary
    assert summary["backend"] == "onnxruntime"
    assert summary["dataset_root"] == str(fake_dataset / "Market-1501-v15.09.15")
    assert (summary["num_query"], summary["num_gallery"]) == (2, 4)
    assert summary["num_gallery_ids"] == 3  # pids 0 (distractor), 1, 2
    assert summary["num_valid_queries"] == 2
    assert (summary["top1"], summary["top5"], summary["top10"]) == (0.5, 1.0, 1.0)
    assert summary["mAP"] == pytest.approx(0.75)
    assert len(summary["cmc"]) == 50
    assert summary["ap_variant"] == "non-interpolated"
    assert summary["dumps"] == str(layout.root / "dumps" / "onnxruntime")
    out = capsys.readouterr().out
    assert "top-1 50.0%  top-5 100.0%  top-10 100.0%  mAP 75.0%" in out


def test_evaluate_run_reads_ais_bench_dumps_elsewhere(tmp_path, fake_dataset):
    layout = RunLayout(tmp_path / "run")
    dumps = tmp_path / "ascend"
    write_dumps(dumps / "query" / "2024_05_01-12_30_00", QUERY, QF, "_0.bin")
    write_dumps(dumps / "gallery" / "2024_05_01-12_31_00", GALLERY, GF, "_0.bin")

    summary = evaluate_run(fake_dataset, layout, backend="ais_bench", dumps=dumps, max_rank=10)

    assert summary["top1"] == 0.5
    assert len(summary["cmc"]) == 10
    assert summary["dumps"] == str(dumps)
    assert layout.eval_path("ais_bench").is_file()


def test_evaluate_run_needs_top_10(tmp_path, fake_dataset):
    with pytest.raises(PcbError, match="max_rank >= 10"):
        evaluate_run(fake_dataset, RunLayout(tmp_path / "run"), max_rank=5)
