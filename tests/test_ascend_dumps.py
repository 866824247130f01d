"""The dumps every Ascend guide leaves, read by `pcb evaluate` and `pcb import-results`: one
output per image (ours, the guide's), or ModelZoo's 7-output PCB model (the feature and six
751-class scores, PCB_pth_postprocess.py keeping output 0), named from 0 (ais_bench, msit
benchmark) or from 1 (the old benchmark tool); and the old tool's PureInfer files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ascend_helpers import fixture_text, make_run, stems

from pcb.ascend.import_results import import_results
from pcb.constants import FEATURE_BYTES, FEATURE_DIM
from pcb.errors import PcbError
from pcb.evaluate import dump_stems, load_features, match_dumps

# One image's classifier output of the 7-output model: 751 float32 scores.
SCORES_BYTES = 751 * 4


class Record:
    def __init__(self, stem: str):
        self.stem = stem


STEMS = stems("query", 3)
RECORDS = [Record(s) for s in STEMS]
FEATURES = np.random.default_rng(1).standard_normal((3, FEATURE_DIM)).astype(np.float32)


def seven_outputs(folder: Path, first: int) -> None:
    """The 7-output model's dumps: the feature at index `first`, then six score files."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, feature in zip(STEMS, FEATURES):
        feature.tofile(folder / f"{stem}_{first}.bin")
        for k in range(first + 1, first + 7):
            (folder / f"{stem}_{k}.bin").write_bytes(b"\1" * SCORES_BYTES)


@pytest.mark.parametrize("first", [0, 1], ids=["ais_bench _0.._6", "benchmark _1.._7"])
def test_the_feature_is_picked_by_its_size(tmp_path, first):
    seven_outputs(tmp_path, first)
    notes: list[str] = []
    np.testing.assert_array_equal(load_features(tmp_path, RECORDS, notes), FEATURES)
    assert len(notes) == 1 and notes[0].startswith("18 dumps of other outputs ignored")
    assert f"{FEATURE_BYTES}-byte output" in notes[0]
    match = match_dumps(tmp_path, STEMS)
    assert [p.name for p in match.paths] == [f"{s}_{first}.bin" for s in STEMS]


def test_an_image_without_a_feature_sized_output_is_named(tmp_path):
    seven_outputs(tmp_path, 0)
    (tmp_path / f"{STEMS[1]}_0.bin").write_bytes(b"\0" * 100)
    with pytest.raises(PcbError) as error:
        load_features(tmp_path, RECORDS)
    message = str(error.value)
    assert f"{STEMS[1]}_0.bin (100 bytes)" in message and f"none of {FEATURE_BYTES}" in message


def test_market_stems_end_in_digits_too():
    # `0001_c1s1_001051_00.bin` is image 0001_c1s1_001051_00, or output 00 of 0001_c1s1_001051
    assert dump_stems("0001_c1s1_001051_00.bin") == ["0001_c1s1_001051_00", "0001_c1s1_001051"]
    assert dump_stems("0001_c1s1_001051_00_6.bin")[-1] == "0001_c1s1_001051_00"
    assert dump_stems("x_summary.json") == []


def test_msit_benchmark_output_layout_is_read_as_it_is(tmp_path):
    # msit benchmark --input bins/query --output out: out/<ts>/<stem>_0.bin + <ts>_summary.json
    stamp = tmp_path / "query" / "2023_01_03-06_35_53"
    stamp.mkdir(parents=True)
    for stem, feature in zip(STEMS, FEATURES):
        feature.tofile(stamp / f"{stem}_0.bin")
    (tmp_path / "query" / "2023_01_03-06_35_53_summary.json").write_text("{}")
    np.testing.assert_array_equal(load_features(tmp_path / "query", RECORDS), FEATURES)


def test_import_seven_output_benchmark_dumps(tmp_path, capsys):
    layout = make_run(tmp_path / "run", {"query": 3, "gallery": 2})
    source = tmp_path / "result"
    seven_outputs(source / "dumpOutput_device0_query", 1)
    gallery = source / "dumpOutput_device0_gallery"
    gallery.mkdir()
    for stem in stems("gallery", 2):
        FEATURES[0].tofile(gallery / f"{stem}_1.bin")
    result = import_results(source, layout, chip="310")
    assert result["dumps"] == {"gallery": 2, "query": 3}
    assert "query: 18 dumps of the model's other outputs left out" in capsys.readouterr().out
    imported = sorted(p.name for p in layout.dumps_dir("Ascend310-benchmark", "query").iterdir())
    assert imported == [f"{s}_1.bin" for s in STEMS]


def test_import_pure_infer_files(tmp_path, capsys):
    layout = make_run(tmp_path / "run", {"query": 1})
    source = tmp_path / "result"
    source.mkdir()
    name = "PureInfer_perf_of_onnx_alexnet_bs4_in_device_0.txt"
    (source / name).write_text(fixture_text(name))
    result = import_results(source, layout, chip="310")
    chip, card = result["perf"]
    assert (chip["platform"], chip["batch_size"], chip["images_per_s"]) == (
        "Ascend310-dev0",
        4,
        974.27,
    )
    assert card["images_per_s"] == pytest.approx(974.27 * 4)
    assert chip["extra"]["measured_by"].startswith("a pure inference")
    # Without `_bs<N>` in the model's name, the batch size must be given.
    (source / name).rename(source / "PureInfer_perf_of_pcb_in_device_1.txt")
    with pytest.raises(PcbError, match=r"does not say the batch size .* --batch-size"):
        import_results(source, layout, chip="310")
    records = import_results(source, layout, chip="310", batch_size=16)["perf"]
    assert records[0]["batch_size"] == 16 and records[0]["platform"] == "Ascend310-dev1"
