"""Chip names, the names derived from them, device lists, and `npu-smi info` tables."""

from __future__ import annotations

import pytest
from ascend_helpers import fixture_text, use_doubles

from pcb.ascend import npu_smi
from pcb.ascend.chips import (
    INFERENCE_CHIPS,
    backend_key,
    default_chips_per_card,
    device_platform,
    normalize_chip,
    parse_devices,
    platform_name,
    soc_version,
)
from pcb.ascend.npu_smi import (
    card_scope,
    chip_from_info,
    detect_chip,
    parse_npu_smi_info,
    read_npu_smi_info,
    resolve_chip,
)
from pcb.errors import PcbError


@pytest.mark.parametrize(
    ("given", "chip"),
    [
        ("310P3", "310P3"),
        ("310p3", "310P3"),
        (" Ascend310P3 ", "310P3"),
        ("ascend310", "310"),
        ("310B1", "310B1"),
        ("AUTO", "auto"),
    ],
)
def test_chip_names(given, chip):
    assert normalize_chip(given) == chip


@pytest.mark.parametrize("bad", ["311", "910B2", "Ascend", "", "310P"])
def test_unknown_chip_lists_the_known_ones(bad):
    with pytest.raises(PcbError) as error:
        normalize_chip(bad)
    message = str(error.value)
    assert f"unknown Ascend chip {bad!r}" in message
    assert all(chip in message for chip in INFERENCE_CHIPS) and "or auto" in message


def test_auto_is_refused_where_a_real_chip_is_needed():
    with pytest.raises(PcbError, match="unknown Ascend chip 'auto'"):
        soc_version("auto")


def test_derived_names():
    assert soc_version("310p3") == "Ascend310P3"
    assert platform_name("310P3") == "Ascend310P3"
    assert platform_name("310P3", aoe=True) == "Ascend310P3-aoe"
    assert platform_name("310", dynamic=True) == "Ascend310-dynamic"
    assert backend_key("310P3") == "Ascend310P3-ais_bench"
    assert backend_key("310P3", aoe=True) == "Ascend310P3-aoe-ais_bench"
    assert backend_key("310", "benchmark") == "Ascend310-benchmark"
    assert device_platform("Ascend310P3", 3) == "Ascend310P3-dev3"
    assert default_chips_per_card("310") == 4
    assert default_chips_per_card("310P3") == 1


@pytest.mark.parametrize(
    ("given", "ids"),
    [("0", (0,)), ("0,1,2,3", (0, 1, 2, 3)), (" 3, 1 ", (3, 1)), (2, (2,)), ([0, "5"], (0, 5))],
)
def test_devices(given, ids):
    assert parse_devices(given) == ids


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "no NPU device"),
        ("a", "'a' is not a non-negative"),
        ("-1", "'-1'"),
        ("0,0", r"\[0\] given more than once"),
        (True, "give ids"),
        ([1.5], "1.5"),
    ],
)
def test_bad_devices(bad, message):
    with pytest.raises(PcbError, match=message):
        parse_devices(bad)


# ---- npu-smi info ------------------------------------------------------------------------------


def test_310_table_five_cards_of_four_chips():
    info = parse_npu_smi_info(fixture_text("npu_smi_310_atlas300_x5.txt"))
    assert info.version == "20.2.2"
    assert len(info.chips) == 20
    assert [c.device_id for c in info.chips] == list(range(20))
    assert {c.name for c in info.chips} == {"310"}
    assert info.chips[5].card == 2049 and info.chips[5].chip == 1
    assert info.chips[9].bus_id == "0000:8A:00.0"
    assert info.card_devices(2049) == (4, 5, 6, 7)
    assert chip_from_info(info) == "310"
    assert chip_from_info(info, [4, 19]) == "310"


def test_310_200dk_bus_id_na():
    info = parse_npu_smi_info(fixture_text("npu_smi_310_200dk.txt"))
    [chip] = info.chips
    assert (chip.card, chip.chip, chip.device_id, chip.bus_id, chip.health) == (0, 0, 0, "NA", "OK")
    assert chip_from_info(info) == "310"


def test_310P3_duo_two_chips_one_card():
    info = parse_npu_smi_info(fixture_text("npu_smi_310P3_duo.txt"))
    assert info.version == "25.2.0"
    assert [(c.card, c.chip, c.device_id, c.name) for c in info.chips] == [
        (2, 0, 0, "310P3"),
        (2, 1, 1, "310P3"),
    ]
    assert chip_from_info(info, [1]) == "310P3"


def test_310P3_collapsed_spacing_without_device_column():
    info = parse_npu_smi_info(fixture_text("npu_smi_310P3_x4_collapsed.txt"))
    assert [(c.card, c.device_id) for c in info.chips] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert info.chips[0].health == "0K"
    assert chip_from_info(info) == "310P3"


def test_process_table_ends_the_parse_and_910_is_refused():
    info = parse_npu_smi_info(fixture_text("npu_smi_910_processes.txt"))
    assert [c.device_id for c in info.chips] == [0, 1]
    assert info.chips[0].name == "Ascend910"
    with pytest.raises(PcbError, match=r"names the chip 'Ascend910', which is not an Ascend"):
        chip_from_info(info)
    with pytest.raises(PcbError, match="'910B2'"):
        chip_from_info(parse_npu_smi_info(fixture_text("npu_smi_910B2.txt")))


def test_empty_table_and_unknown_devices():
    with pytest.raises(PcbError, match="listed no NPU chip"):
        parse_npu_smi_info("+---+\n| NPU Name | Health |\n+===+\n")
    info = parse_npu_smi_info(fixture_text("npu_smi_310P3_duo.txt"))
    with pytest.raises(PcbError, match=r"device\(s\) \[7\] are not in `npu-smi info` .* 0, 1"):
        chip_from_info(info, [0, 7])


def test_card_scope():
    duo = parse_npu_smi_info(fixture_text("npu_smi_310P3_duo.txt"))
    assert card_scope([1, 0], duo) == ("card", 2)
    assert card_scope([0], duo) == ("chip", None)
    atlas = parse_npu_smi_info(fixture_text("npu_smi_310_atlas300_x5.txt"))
    assert card_scope([0, 1, 2, 3], atlas) == ("card", 2048)
    assert card_scope([3, 4], atlas) == ("2 chips", None)
    assert card_scope([0, 1, 2], atlas) == ("3 chips", None)
    pro = parse_npu_smi_info(fixture_text("npu_smi_310P3_x4_collapsed.txt"))
    assert card_scope([2], pro) == ("card", 2)  # one chip that is a whole card
    assert card_scope([0, 1], None) == ("2 chips", None)


def test_detect_chip_runs_npu_smi(monkeypatch):
    use_doubles(monkeypatch, "npu_smi_310_atlas300_x5.txt")
    assert read_npu_smi_info().chips[19].device_id == 19
    assert detect_chip([0, 1]) == "310"
    assert resolve_chip("auto", [2]) == "310"
    assert resolve_chip("310p3") == "310P3"  # a name given is not checked against npu-smi


def test_npu_smi_failures_are_explained(monkeypatch, tmp_path):
    use_doubles(monkeypatch)
    monkeypatch.setenv("NPU_SMI_DOUBLE_TABLE", str(tmp_path / "absent.txt"))
    with pytest.raises(PcbError, match=r"failed with exit status 1: dcmi module initialize"):
        detect_chip()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(npu_smi, "NPU_SMI_PATHS", ())
    with pytest.raises(PcbError, match=r"npu-smi not found .* pass the chip by name"):
        detect_chip()
