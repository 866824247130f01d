"""The old benchmark tool: its perf file (the guide's own section 7.1 numbers) and importing a
folder of its results, made by hand with the guide's commands, into a run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from ascend_helpers import fixture_path, fixture_text, make_run, stems

from pcb.ascend.benchmark_legacy import parse_benchmark_perf, parse_perf_file_name
from pcb.ascend.import_results import has_dump_folders, import_results
from pcb.cli.main import main
from pcb.constants import FEATURE_BYTES
from pcb.errors import PcbError
from pcb.evaluate import load_features
from pcb.perf import read_perf_records

GUIDE_PERF = "guide_query_perf_vision_batchsize_1_device_0.txt.txt"


def test_the_guides_section_7_1():
    perf = parse_benchmark_perf(fixture_text(GUIDE_PERF))
    assert perf.interface_rate == 137.422
    assert perf.card_rate(4) == pytest.approx(549.688)  # the guide's 310 column, batch 1
    assert perf.infer_rate == 106.343
    assert perf.e2e_rate == 104.078 and perf.e2e_latency_ms == 32360.4
    assert perf.infer_module_latency_ms == 8.68511
    assert perf.modules["data read"] == {"throughputRate": 441.807, "moduleLatency": 2.26343}
    assert perf.modules["post"]["moduleLatency"] == 9.40375


def test_not_a_perf_file():
    with pytest.raises(
        PcbError, match=r"no `\[infer\]` / `\[inference\] ... Interface throughputRate"
    ):
        parse_benchmark_perf("[e2e] throughputRate: 1.0, latency: 2.0\n", "x.txt")
    with pytest.raises(PcbError, match="chips per card must be positive"):
        parse_benchmark_perf(fixture_text(GUIDE_PERF)).card_rate(0)


@pytest.mark.parametrize(
    ("name", "batch", "device", "prefix"),
    [
        ("perf_vision_batchsize_1_device_0.txt", 1, 0, ""),
        ("query_perf_vision_batchsize_16_device_3.txt", 16, 3, "query"),
        ("query_perf_vision_batchsize_1_device_0.txt.txt", 1, 0, "query"),  # as the guide names it
        ("gallery_perf_vision_batchsize_64_device_12.txt", 64, 12, "gallery"),
    ],
)
def test_perf_file_names(name, batch, device, prefix):
    parsed = parse_perf_file_name(name)
    assert (parsed.batch_size, parsed.device, parsed.prefix) == (batch, device, prefix)


@pytest.mark.parametrize("name", ["perf_vision_batchsize_x_device_0.txt", "perf.txt", "a.bin"])
def test_other_files_are_no_perf_files(name):
    assert parse_perf_file_name(name) is None


def guide_result_folder(root: Path, sizes: dict[str, int], bare: bool = False) -> Path:
    """What the guide's commands leave in result/: the renamed dump folders and perf files."""
    result = root / "result"
    result.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, count in sizes.items():
        folder = result / ("dumpOutput_device0" if bare else f"dumpOutput_device0_{split}")
        folder.mkdir(parents=True, exist_ok=True)
        for stem in stems(split, count):
            rng.standard_normal(FEATURE_BYTES // 4, dtype=np.float32).tofile(
                folder / f"{stem}_1.bin"
            )
    text = fixture_text(GUIDE_PERF)
    (result / "query_perf_vision_batchsize_1_device_0.txt").write_text(text)
    (result / "gallery_perf_vision_batchsize_1_device_0.txt").write_text(
        text.replace("137.422", "140.5")
    )
    (result / "perf_vision_batchsize_16_device_0.txt").write_text(text.replace("137.422", "353.0"))
    return root


def test_import_the_guides_folder(tmp_path: Path):
    sizes = {"query": 3, "gallery": 4}
    source = guide_result_folder(tmp_path / "byhand", sizes)
    layout = make_run(tmp_path / "run", sizes)
    assert has_dump_folders(source)
    result = import_results(source, layout, chip="310")
    assert result["backend"] == "Ascend310-benchmark"
    records = read_perf_records(layout.perf_path("Ascend310-benchmark"))
    table = [(r.platform, r.batch_size, r.scope, round(r.images_per_s, 3)) for r in records]
    assert table == [
        ("Ascend310-dev0", 1, "chip", 137.422),  # the query file, as the guide quotes it
        ("Ascend310", 1, "card", 549.688),  # x 4 chips of an Atlas 300I
        ("Ascend310-dev0", 16, "chip", 353.0),
        ("Ascend310", 16, "card", 1412.0),
    ]
    card = records[1]
    assert card.backend == card.tool == "benchmark"
    assert "x 4 chips per card" in card.extra["estimated"]
    assert card.extra["other_files"] == {"gallery_perf_vision_batchsize_1_device_0.txt": 140.5}
    assert card.latency.mean_ms == pytest.approx(1000 / 137.422)
    # The dumps, where evaluate reads them, `_1` names kept
    for split, count in sizes.items():
        folder = layout.dumps_dir("Ascend310-benchmark", split)
        assert sorted(os.listdir(folder)) == sorted(f"{s}_1.bin" for s in stems(split, count))
        record = json.loads((folder.parent / f"{split}.json").read_text())
        assert record["complete"] and record["count"] == count and record["backend"] == "benchmark"


def test_imported_dumps_load_like_any_backend(tmp_path: Path):
    sizes = {"query": 2, "gallery": 2}
    source = guide_result_folder(tmp_path / "byhand", sizes)
    layout = make_run(tmp_path / "run", sizes)
    import_results(source, layout)

    class Record:
        def __init__(self, stem: str) -> None:
            self.stem = stem

    features = load_features(
        layout.dumps_dir("Ascend310-benchmark", "query"), [Record(s) for s in stems("query", 2)]
    )
    original = np.fromfile(
        source / "result" / "dumpOutput_device0_query" / f"{stems('query', 2)[1]}_1.bin",
        dtype=np.float32,
    )
    np.testing.assert_array_equal(features[1], original)


def test_310P3_card_is_one_chip_and_batch_filter(tmp_path: Path):
    source = guide_result_folder(tmp_path / "byhand", {})
    layout = make_run(tmp_path / "run", {"query": 1})
    import_results(source, layout, chip="310P3", batch_size=16)
    [record] = read_perf_records(layout.perf_path("Ascend310P3-benchmark"))
    assert (record.platform, record.scope, record.images_per_s) == ("Ascend310P3", "card", 353.0)
    import_results(source, layout, chip="310P3", batch_size=16, chips_per_card=2)  # 300I Duo
    records = read_perf_records(layout.perf_path("Ascend310P3-benchmark"))
    assert [r.images_per_s for r in records] == [353.0, 706.0]


def test_bare_dump_folder_is_split_by_the_runs_lists(tmp_path: Path):
    sizes = {"query": 2, "gallery": 3}
    source = guide_result_folder(tmp_path / "byhand", sizes, bare=True)
    layout = make_run(tmp_path / "run", sizes)
    assert import_results(source, layout)["dumps"] == {"gallery": 3, "query": 2}
    unsplit = make_run(tmp_path / "fresh", {})
    with pytest.raises(PcbError, match="which split do these dumps belong to"):
        import_results(source, unsplit)


def test_nothing_to_import_and_wrong_sizes(tmp_path: Path, capsys):
    layout = make_run(tmp_path / "run", {"query": 1})
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["import-results", "--from", str(empty), "--run", str(layout.root)])
    assert code == 1 and "nothing to import in" in capsys.readouterr().err
    broken = tmp_path / "broken" / "dumpOutput_device0_query"
    broken.mkdir(parents=True)
    (broken / "0001_c1s1_000000_00_1.bin").write_bytes(b"\0" * 100)
    with pytest.raises(PcbError, match=r"1 query images have no single dump of 49152 bytes"):
        import_results(broken.parent, layout)
    with pytest.raises(PcbError, match="results folder .* not found"):
        import_results(tmp_path / "absent", layout)


def test_cli_imports_the_guides_numbers(tmp_path: Path, capsys):
    source = tmp_path / "byhand"
    source.mkdir()
    (source / "perf_vision_batchsize_1_device_0.txt").write_text(
        fixture_path(GUIDE_PERF).read_text()
    )
    run = tmp_path / "run"
    assert main(["import-results", "--from", str(source), "--run", str(run), "--chip", "310"]) == 0
    out = capsys.readouterr().out
    assert "Ascend310-dev0 batch 1: 137.422 images/s per chip" in out
    assert "Ascend310 batch 1: 549.688 images/s per card" in out
