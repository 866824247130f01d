from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pcb.dataset import (
    BAD_NAME,
    DANGLING_LINK,
    DUPLICATE,
    NOT_JPEG,
    ImageRecord,
    describe,
    find_market_root,
    list_split,
    load_market,
    load_split,
    parse_name,
    shown_name,
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


def test_listing_accounts_for_every_file(tmp_path):
    """Not images at all: ignored and named; an image pcb cannot read: named as unusable."""
    root = make_market(tmp_path)
    (root / "query" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / "query" / "notes.txt").write_text("not an image")
    (root / "query" / "0004_c1s1_000001_00.jpg.part").write_bytes(b"")
    (root / "query" / "subdir.jpg").mkdir()
    (root / "query" / ".DS_Store").write_bytes(b"")
    (root / "query" / "._0001_c1s1_001051_00.jpg").write_bytes(b"AppleDouble")  # macOS
    (root / "query" / "0003_c1s1_000001_00.png").write_bytes(b"png")
    listing = list_split(root, "query")
    assert [r.stem for r in listing.records] == sorted(Path(n).stem for n in QUERY)
    assert listing.ignored == [
        ".DS_Store",
        "._0001_c1s1_001051_00.jpg",
        "0004_c1s1_000001_00.jpg.part",
        "Thumbs.db",
        "notes.txt",
        "subdir.jpg/",
    ]
    assert [(u.name, u.reason) for u in listing.unusable] == [("0003_c1s1_000001_00.png", NOT_JPEG)]
    assert "is a .png file" in listing.unusable[0].message
    assert listing.found == 10 == len(listing.records) + listing.junk + 1 + len(listing.ignored)
    with pytest.raises(PcbError, match="0003_c1s1_000001_00.png is a .png file"):
        load_split(root, "query")
    # Once preprocessing has left it out (and listed it), it is allowed.
    assert len(load_split(root, "query", allowed={"0003_c1s1_000001_00.png"})) == len(QUERY)


def test_listing_counts_junk(tmp_path):
    listing = list_split(make_market(tmp_path), "gallery")
    assert (listing.found, len(listing.records), listing.junk) == (6, 4, 2)
    assert listing.unusable == [] and listing.ignored == []


@pytest.mark.parametrize("extension", [".JPG", ".jpeg", ".JPEG", ".Jpg"])
def test_jpeg_extensions_in_any_case_are_read(tmp_path, extension):
    name = "0003_c4s1_000001_00"
    root = make_market(tmp_path, query=[*QUERY, name + extension])
    records = load_split(root, "query")
    assert name in [r.stem for r in records]
    assert (root / "query" / f"{name}{extension}") in [r.path for r in records]


def test_the_same_image_twice_is_named(tmp_path):
    root = make_market(tmp_path, query=[*QUERY, "0001_c1s1_001051_00.JPG"])
    listing = list_split(root, "query")
    assert sorted(u.name for u in listing.unusable) == [
        "0001_c1s1_001051_00.JPG",
        "0001_c1s1_001051_00.jpg",
    ]
    assert {u.reason for u in listing.unusable} == {DUPLICATE}
    assert "0001_c1s1_001051_00.bin" in listing.unusable[0].message
    assert "0001_c1s1_001051_00" not in [r.stem for r in listing.records]


def test_dangling_link_is_named_with_its_target(tmp_path):
    root = make_market(tmp_path)
    link = root / "query" / "0005_c2s1_000001_00.jpg"
    link.symlink_to(tmp_path / "outside" / "0005_c2s1_000001_00.jpg")
    listing = list_split(root, "query")
    (problem,) = listing.unusable
    assert (problem.path, problem.reason) == (link, DANGLING_LINK)
    assert str(tmp_path / "outside" / "0005_c2s1_000001_00.jpg") in problem.message
    assert "does not exist" in problem.message and "under data/" in problem.message
    with pytest.raises(PcbError, match="is a symbolic link to"):
        load_split(root, "query")
    # A link that resolves is an image like any other.
    target = tmp_path / "elsewhere.jpg"
    write_jpeg(target)
    link.unlink()
    link.symlink_to(target)
    assert link in [r.path for r in load_split(root, "query")]


def test_a_junk_image_is_dropped_whatever_it_is(tmp_path):
    root = make_market(tmp_path)
    (root / "bounding_box_test" / "-1_c2s1_000001_00.jpg").symlink_to(tmp_path / "nowhere")
    listing = list_split(root, "gallery")
    assert listing.junk == 3 and listing.unusable == []


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("0005_c1s1_000001_00\n.jpg", "a newline"),
        ("0005_c1s1\n_000001_00.jpg", "a newline"),
        ("0005_c1s1_000001_00\t.jpg", "a tab"),
        ("0005_c1s1_000001_00 copy.jpg", "a space"),
        ("0005_c1s1_000001_00\r.jpg", "a carriage return"),
        ("0005_c1s1_000001_00\x1b.jpg", "U+001B"),
        ("0005_c1s1_000001_00\u202e.jpg", "U+202E"),  # right-to-left override
        ("0005_c1s1_000001_00\udcff.jpg", "not UTF-8"),  # a byte 0xff, as Python lists it
    ],
)
def test_names_the_info_list_cannot_hold(tmp_path, name, what):
    root = make_market(tmp_path)
    path = root / "query" / name
    path.write_bytes((root / "query" / QUERY[0]).read_bytes())
    listing = list_split(root, "query")
    (problem,) = listing.unusable
    assert problem.reason == BAD_NAME
    assert what in problem.message
    # Named on one line, escaped, so that the message itself stays printable.
    assert "\n" not in problem.message and "\t" not in problem.message
    assert ascii(name) in problem.message
    problem.message.encode("utf-8")
    assert shown_name(name) == ascii(name)
    assert shown_name(QUERY[0]) == QUERY[0]


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
