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
