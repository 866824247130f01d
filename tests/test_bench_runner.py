"""The bench runner: its JSON and table, on a tiny quick configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcb.bench.common import BenchConfig, BenchResult, Figure, ratio_figure
from pcb.bench.runner import BENCHMARKS, main, parse_only, render_table, run_bench
from pcb.errors import PcbError


def test_json_structure_of_a_tiny_run(tmp_path: Path, capsys) -> None:
    config = BenchConfig(quick=True, preprocess_identities=2, preprocess_repeats=1)
    payload = run_bench(config, ["preprocessing"], tmp_path)
    path = Path(payload["path"])
    assert path.parent == tmp_path and path.name.endswith("-quick.json")
    written = json.loads(path.read_text())
    assert written["mode"] == "quick"
    assert written["command"] == "invoke bench --quick"
    assert {"cpu", "cores", "flags", "load_average", "versions"} <= set(written["machine"])
    assert written["targets"]["total"] == 1
    assert written["targets"]["failed_benchmarks"] == []
    [bench] = written["benchmarks"]
    assert bench["name"] == "preprocessing" and bench["error"] is None
    for figure in bench["figures"]:
        assert set(figure) == {"name", "value", "unit", "target", "met", "note"}
    out = capsys.readouterr().out
    assert "pipeline / reference" in out and ">= 1.8" in out
    assert str(path) in out


def test_a_failing_benchmark_is_reported_not_raised(tmp_path: Path, monkeypatch) -> None:
    import pcb.bench.preprocessing as module

    def broken(config, workdir=None):
        raise PcbError("outputs differ")

    monkeypatch.setattr(module, "bench_preprocessing", broken)
    payload = run_bench(BenchConfig.quick_mode(), ["preprocessing"], tmp_path, quiet=True)
    assert payload["targets"]["failed_benchmarks"] == ["preprocessing"]
    assert payload["benchmarks"][0]["error"] == "outputs differ"


def test_only_is_checked_and_ordered() -> None:
    assert parse_only(None) == list(BENCHMARKS)
    assert parse_only("int8, evaluation, rerun") == ["rerun", "evaluation", "int8"]
    with pytest.raises(PcbError, match="unknown benchmark.*gpu"):
        parse_only("gpu")


def test_main_reports_bad_options(capsys) -> None:
    assert main(["--only", "nothing"]) == 1
    assert "unknown benchmark" in capsys.readouterr().err


def test_table_shows_targets_and_verdicts() -> None:
    result = BenchResult(
        "x",
        [
            ratio_figure("speed-up", 2.5, 3.0),
            Figure("cosine", 0.99876, "", ">= 0.99", True),
            Figure("context", 12.0, "s"),
        ],
    )
    table = render_table([result, BenchResult("y", error="boom")])
    assert "NOT MET" in table and "| met " in table.replace("|  met", "| met")
    assert "0.9988" in table and "FAILED" in table


def test_quick_mode_is_smaller_than_full() -> None:
    quick, full = BenchConfig.quick_mode(), BenchConfig.full()
    assert quick.quick and not full.quick
    assert len(quick.batch_sizes) < len(full.batch_sizes)
    assert quick.reference_queries < full.reference_queries


# ---------------------------------------------------------------- --compare


def _payload(figures: list[dict], date: str = "2026-12-01") -> dict:
    return {
        "date": date,
        "mode": "full",
        "machine": {"cpu": "CPU X", "cores": 2, "load_average_before": [0.1, 0.1, 0.1]},
        "benchmarks": [{"name": "int8", "figures": figures}],
    }


def _figure(name: str, value: float | None, met: bool | None, target: str = "") -> dict:
    return {"name": name, "value": value, "unit": "", "target": target, "met": met, "note": ""}


def test_compare_gives_ratios_and_names_regressions() -> None:
    from pcb.bench.compare import compare, render

    old = _payload(
        [
            _figure("speed-up", 4.0, True, ">= 3.8"),
            _figure("cosine", 0.998, False, ">= 0.999"),
            _figure("gone figure", 1.0, None),
        ]
    )
    new = _payload(
        [
            _figure("speed-up", 3.0, False, ">= 3.8"),
            _figure("cosine", 0.9995, True, ">= 0.999"),
            _figure("added", 2.0, None),
        ]
    )
    rows = {r["figure"]: r for r in compare(new, old)}
    assert rows["speed-up"]["ratio"] == pytest.approx(0.75)
    assert rows["speed-up"]["status"] == "REGRESSED"
    assert rows["cosine"]["status"] == "now met"
    assert rows["added"]["status"] == "new figure" and rows["added"]["ratio"] is None
    assert rows["gone figure"]["status"] == "gone"
    text = render(list(rows.values()), new, old)
    assert "1 target(s) met before and not now" in text
    assert "0.750" in text and "CPU X" in text


def test_compare_refuses_what_is_not_a_bench_record(tmp_path: Path) -> None:
    from pcb.bench.compare import read_bench

    with pytest.raises(PcbError, match="not found"):
        read_bench(tmp_path / "absent.json")
    (tmp_path / "x.json").write_text('{"records": []}', encoding="utf-8")
    with pytest.raises(PcbError, match="not a benchmark record"):
        read_bench(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{", encoding="utf-8")
    with pytest.raises(PcbError, match="not a benchmark record"):
        read_bench(tmp_path / "y.json")


def test_main_compares_with_an_earlier_run(tmp_path: Path, monkeypatch, capsys) -> None:
    import pcb.bench.preprocessing as module

    def fake(config, workdir=None):
        return BenchResult("preprocessing", [ratio_figure("pipeline / reference", 2.0, 1.8)])

    monkeypatch.setattr(module, "bench_preprocessing", fake)
    first = tmp_path / "first"
    assert main(["--quick", "--only", "preprocessing", "--out", str(first)]) == 0
    [old] = list(first.glob("*.json"))
    capsys.readouterr()
    second = tmp_path / "second"
    argv = ["--quick", "--only", "preprocessing", "--out", str(second), "--compare", str(old)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "new / old" in out and "1.000" in out and "0 target(s) met before" in out
    assert main([*argv[:-1], str(tmp_path / "nope.json")]) == 1
    assert "not found" in capsys.readouterr().err


def test_new_benchmarks_are_known_in_order() -> None:
    assert parse_only("market_scale,loadgen,torch") == ["loadgen", "torch", "market_scale"]
    assert BENCHMARKS[-1] == "market_scale"


def test_per_batch_ratios_judge_the_round_by_round_spread():
    from pcb.bench.common import per_batch_ratios

    steady = {
        "batch_size": 8,
        "int8_images_per_s": 60.0,
        "fp32_images_per_s": 16.0,
        "int8_rounds": [58.0, 60.0, 59.0],
        "fp32_rounds": [15.5, 16.0, 15.8],
    }
    # The machine slowed int8's second round only: a ratio not to print as if exact.
    shaken = {**steady, "batch_size": 16, "int8_rounds": [60.0, 45.0, 59.0]}
    bare = {"batch_size": 32, "int8_images_per_s": 60.0, "fp32_images_per_s": 16.0}
    figures = per_batch_ratios([steady, shaken, bare], "int8", "fp32")
    assert [f.name for f in figures] == [
        "bs8: int8 / fp32",
        "bs16: int8 / fp32",
        "bs32: int8 / fp32",
    ]
    assert figures[0].value == pytest.approx(3.75)
    assert "round by round stable: 3 repeats" in figures[0].note
    assert "round by round UNSTABLE: 3 repeats" in figures[1].note
    assert figures[2].note == "60.0 vs 16.0 img/s"  # no rounds recorded: nothing claimed


def test_interleaved_rates_keep_every_round():
    from pcb.bench.common import interleaved_rates

    rates = interleaved_rates({"a": lambda: sum(range(99)), "b": lambda: sum(range(9))}, 4, 0.0, 2)
    for rate in rates.values():
        assert len(rate["rounds"]) == 3
        assert rate["mean"] == max(rate["rounds"])
        assert rate["calls"] == 6
