from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pcb.dataset import (
    ImageRecord,
    describe,
    find_market_root,
    load_market,
    load_split,
    parse_name,
    summarize,
)
from pcb.errors import PcbError

QUERY = ["0001_c1s1_001051_00.jpg", "0002_c3s2_000100_01.jpg", "0001_c2s1_000200_00.jpg"]
GALLERY = [
    "0001_c1s1_001101_00.jpg",  # same camera as a query: kept here, excluded by the metric
    "0001_c5s3_000300_02.jpg",
    "0002_c1s1_000400_00.jpg",
    "0000_c6s1_000500_00.jpg",  # distractor: kept
    "-1_c1s1_000000_00.jpg",  # junk: dropped
    "-1_c4s2_000123_03.jpg",  # junk: dropped
]


def write_jpeg(path: Path, size: tuple[int, int] = (8, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 60, 30)).save(path, "JPEG")


def make_market(
    base: Path, query=QUERY, gallery=GALLERY, name: str = "Market-1501-v15.09.15"
) -> Path:
    root = base / name
    (root / "query").mkdir(parents=True)
    (root / "bounding_box_test").mkdir(parents=True)
    for filename in query:
        write_jpeg(root / "query" / filename)
    for filename in gallery:
        write_jpeg(root / "bounding_box_test" / filename)
    return root


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("0001_c1s1_001051_00.jpg", (1, 1)),
        ("1501_c6s4_002541_02.jpg", (1501, 6)),
        ("0000_c3s2_000100_01.jpg", (0, 3)),
        ("-1_c2s1_000000_00.jpg", (-1, 2)),
    ],
)
def test_parse_name(name, expected):
    assert parse_name(Path(name)) == expected


@pytest.mark.parametrize(
    "name",
    [
        "image.jpg",
        "0001c1s1_001051_00.jpg",
        "0001_c7s1_001051_00.jpg",  # Market has cameras 1..6
        "0001_c0s1_001051_00.jpg",
        "-2_c1s1_000000_00.jpg",
        "--1_c1s1_000000_00.jpg",
        "x0001_c1s1_001051_00.jpg",
    ],
)
def test_parse_name_rejects_other_names(name):
    with pytest.raises(PcbError) as error:
        parse_name(Path("/data/query") / name)
    message = str(error.value)
    assert name in message
    assert "PPPP_cCsS_FFFFFF_BB.jpg" in message


def test_load_split_sorts_drops_junk_keeps_distractors(tmp_path):
    root = make_market(tmp_path)
    query = load_split(root, "query")
    assert [r.stem for r in query] == sorted(Path(n).stem for n in QUERY)
    assert query[0] == ImageRecord(
        path=root / "query" / "0001_c1s1_001051_00.jpg",
        stem="0001_c1s1_001051_00",
        pid=1,
        camid=1,
    )
    gallery = load_split(root, "gallery")
    assert [r.pid for r in gallery] == [0, 1, 1, 2]
    assert all(r.path.parent.name == "bounding_box_test" for r in gallery)
    assert not any(r.stem.startswith("-1") for r in gallery)


def test_load_split_ignores_other_files(tmp_path):
    root = make_market(tmp_path)
    (root / "query" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / "query" / "notes.txt").write_text("not an image")
    (root / "query" / "0003_c1s1_000001_00.png").write_bytes(b"png")
    (root / "query" / "0004_c1s1_000001_00.jpg.part").write_bytes(b"")
    (root / "query" / "subdir.jpg").mkdir()
    assert len(load_split(root, "query")) == len(QUERY)


@pytest.mark.parametrize("name", ["Market-1501-v15.09.15", "Market-1501"])
def test_both_root_forms_are_accepted(tmp_path, name):
    root = make_market(tmp_path / "datasets", name=name)
    (tmp_path / "datasets" / "readme.txt").write_text("other files beside it are fine")
    (tmp_path / "datasets" / "other").mkdir()
    assert find_market_root(root) == root
    assert find_market_root(tmp_path / "datasets") == root
    assert load_split(tmp_path / "datasets", "query") == load_split(root, "query")


def test_missing_root_says_what_and_where(tmp_path):
    with pytest.raises(PcbError) as error:
        find_market_root(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "does not exist" in message
    assert "query/" in message and "bounding_box_test/" in message
    assert "data/README.md" in message


def test_root_that_is_a_file(tmp_path):
    archive = tmp_path / "Market-1501-v15.09.15.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(PcbError, match="is a file, not a folder"):
        find_market_root(archive)


@pytest.mark.parametrize("nested", [False, True])
def test_missing_split_folder_is_named(tmp_path, nested):
    root = tmp_path / "datasets" / "Market-1501-v15.09.15" if nested else tmp_path / "market"
    write_jpeg(root / "query" / QUERY[0])
    given = tmp_path / "datasets" if nested else root
    with pytest.raises(PcbError) as error:
        load_split(given, "query")
    message = str(error.value)
    assert str(root / "bounding_box_test") in message
    assert "data/README.md" in message


def test_folder_without_market_layout(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(PcbError, match="holds no query/ and bounding_box_test/"):
        find_market_root(tmp_path)


def test_two_market_folders_are_ambiguous(tmp_path):
    make_market(tmp_path, name="Market-1501-v15.09.15")
    make_market(tmp_path, name="Market-1501")
    with pytest.raises(PcbError, match="several Market-1501 folders"):
        find_market_root(tmp_path)


def test_empty_split(tmp_path):
    root = make_market(tmp_path, query=[])
    (root / "query" / "Thumbs.db").write_bytes(b"")
    with pytest.raises(PcbError) as error:
        load_split(root, "query")
    assert str(root / "query") in str(error.value)
    assert "no .jpg images" in str(error.value)


def test_split_of_only_junk(tmp_path):
    root = make_market(tmp_path, gallery=["-1_c1s1_000000_00.jpg"])
    with pytest.raises(PcbError) as error:
        load_split(root, "gallery")
    assert "only junk" in str(error.value)
    assert str(root / "bounding_box_test") in str(error.value)


def test_unparsable_name_in_split(tmp_path):
    root = make_market(tmp_path, query=[*QUERY, "IMG_0042.jpg"])
    with pytest.raises(PcbError) as error:
        load_split(root, "query")
    assert str(root / "query" / "IMG_0042.jpg") in str(error.value)
    assert "PPPP_cCsS_FFFFFF_BB.jpg" in str(error.value)


def test_unknown_split(tmp_path):
    root = make_market(tmp_path)
    with pytest.raises(PcbError, match="unknown split 'train'.*query, gallery"):
        load_split(root, "train")


def test_load_market_and_summary(tmp_path):
    market = load_market(make_market(tmp_path))
    assert set(market) == {"query", "gallery"}
    assert summarize(market["query"]) == {"images": 3, "ids": 2, "cameras": 3}
    assert summarize(market["gallery"]) == {"images": 4, "ids": 3, "cameras": 3}
    assert describe(market) == "3 query / 4 gallery over 3 ids"


def test_describe_formats_thousands():
    records = [ImageRecord(Path(f"{i}.jpg"), str(i), i % 751, 1) for i in range(15913)]
    assert describe({"query": records[:3368], "gallery": records}) == (
        "3,368 query / 15,913 gallery over 751 ids"
    )
