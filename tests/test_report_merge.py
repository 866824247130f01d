"""Several run folders, from several hosts, merged into one comparison."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from report_runs import CPU, GPU, NPU, evaluation, make_run, markdown_table

from pcb.cli.main import main
from pcb.errors import PcbError
from pcb.fileio import read_json
from pcb.report.comparison import write_comparison
from pcb.report.published import GUIDE_BEST, GUIDE_THROUGHPUT
from pcb.report.render import throughput_rows
from pcb.report.throughput_table import parse_ratios, published_section, ratio_section

# facts.md section 6, the guide's table 7.4, typed in again here so a slip in either shows.
FACTS_TABLE = {
    "310": [549.688, 1296.72, 1375.24, 1411.96, 1212.25, 1188.12, 1411.96],
    "310P": [352.617, 1512.1, 1897.91, 1492.53, 1706.04, 1857.43, 1897.91],
    "310P_aoe": [1033.16, 2364.58, 2228.24, 1999.29, 2002.7, 2039.35, 2364.58],
    "T4": [749.002, 1209.63, 1383.09, 1495.91, 1554.99, 1578.09, 1578.09],
}
FACTS_BATCHES = [1, 4, 8, 16, 32, 64]


def three_hosts(tmp_path: Path) -> list[Path]:
    """The CPU reference, the NPU and the GPU, each measured on its own machine."""
    cpu = make_run(
        tmp_path / "cpu",
        perf={CPU: {1: 20.0, 4: 30.0}},
        evals=[evaluation("onnxruntime", host="cpu-box")],
        perf_extra={"host": "cpu-box"},
    )
    npu = make_run(
        tmp_path / "npu",
        perf={NPU: {1: 900.0, 4: 2000.0, 16: 2100.0}},
        evals=[evaluation("ais_bench", top1=0.912, host="npu-box")],
        perf_extra={"host": "npu-box"},
    )
    gpu = make_run(
        tmp_path / "gpu",
        perf={GPU: {1: 750.0, 4: 1200.0, 16: 1500.0, 64: 1600.0}},
        perf_extra={"host": "gpu-box"},
    )
    return [cpu.root, npu.root, gpu.root]


def test_three_hosts_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    report = write_comparison(three_hosts(tmp_path), out=out, plots=False)
    assert set(report["throughput"]) == {"cpu-onnxruntime-fp32", "Ascend310P3", "T4-trt-fp16"}
    assert [r["host"] for r in report["runs"]] == ["cpu-box", "npu-box", "gpu-box"]
    assert all(r["host_source"] == "record" for r in report["runs"])
    # The classes order the columns as the guide does: NPU, GPU, then the CPU reference.
    headers = [c["header"] for c in report["table"]["columns"]]
    assert headers == [
        "Ascend310P3",
        "T4-trt-fp16",
        "cpu-onnxruntime-fp32",
        "Ascend310P3/T4-trt-fp16",
        "guide 310",
        "guide 310P",
        "guide 310P_aoe",
        "guide T4",
    ]
    assert report["table"]["batches"] == FACTS_BATCHES
    npu_cell = report["throughput"]["Ascend310P3"]["cells"]["4"]["measurements"][0]
    assert npu_cell["source"]["host"] == "npu-box"
    assert npu_cell["source"]["run"] == "npu"
    assert npu_cell["source"]["tool"] == "ais_bench" and npu_cell["source"]["tool_version"] == "9.9"
    assert npu_cell["scope"] == "chip"
    assert report["throughput"]["T4-trt-fp16"]["class"] == "GPU"
    assert report["throughput"]["T4-trt-fp16"]["best"] == {"batch_size": 64, "images_per_s": 1600.0}

    # The NPU's accuracy is held to the onnxruntime run of the same checkpoint and data.
    npu_acc = report["accuracy"]["ais_bench"]
    assert npu_acc["reference"]["run"] == "cpu"
    assert npu_acc["reference"]["diff_points"]["top1"] == pytest.approx(-0.3)
    assert npu_acc["reference"]["passed"] is True
    assert report["accuracy"]["onnxruntime"]["reference"] is None

    written = {p.name for p in out.iterdir()}
    assert written == {"comparison.json", "comparison.md", "comparison.csv"}
    assert read_json(out / "comparison.json") == json.loads(json.dumps(report))
    markdown = (out / "comparison.md").read_text()
    assert "## Runs" in markdown and "npu-box" in markdown and "gpu-box" in markdown
    throughput = markdown_table(markdown, "batch")
    assert throughput[0][4] == "Ascend310P3/T4-trt-fp16"
    assert throughput[1][:5] == ["source", "measured[^3]", "measured[^5]", "measured[^1]", "ratio"]
    assert throughput[2][:4] == ["scope", "per chip", "per gpu", "per process"]
    accuracy = {row[0]: row for row in markdown_table(markdown, "backend")}
    assert accuracy["onnxruntime[^2]"][1] == "cpu"
    assert accuracy["ais_bench[^4]"][1] == "npu"
    assert accuracy["ais_bench[^4]"][7:] == ["-0.30 / +0.00 / +0.00 / +0.00 PASS (run cpu)", "PASS"]
    # Each source a footnote: run folder, file, host, tool and version.
    assert "[^3]: run `npu` (`" in markdown and "[^4]: run `npu` (`" in markdown
    assert "`perf/ais_bench.json`, host `npu-box`, ais_bench 9.9" in markdown
    assert "[^guide]: the guide's table 7.4" in markdown
    assert "Ascend310P3/T4-trt-fp16" in capsys.readouterr().out


def test_ratio_columns_default_npu_over_gpu(tmp_path: Path) -> None:
    report = write_comparison(three_hosts(tmp_path), out=tmp_path / "out", plots=False)
    ratio = report["ratios"]["Ascend310P3/T4-trt-fp16"]
    assert ratio["by_batch"] == pytest.approx({"1": 1.2, "4": 2000 / 1200, "16": 1.4})
    assert ratio["best"] == pytest.approx(2100 / 1600)  # best over best, as the guide does
    headers, rows = throughput_rows(report)
    column = headers.index("Ascend310P3/T4-trt-fp16")
    by_batch = {row[0]: row[column] for row in rows}
    assert by_batch["source"] == "ratio"
    assert by_batch["1"] == "1.200" and by_batch["8"] == "-" and by_batch["best"] == "1.312"
    best = {h: v for h, v in zip(headers, rows[-1])}
    assert best["Ascend310P3"] == "2100.0 (bs16)"
    assert best["guide 310P_aoe"] == "2364.58 (bs4)"


def test_ratios_chosen_with_published_columns(tmp_path: Path) -> None:
    report = write_comparison(
        three_hosts(tmp_path),
        out=tmp_path / "out",
        ratios="cpu-onnxruntime-fp32/T4-trt-fp16, Ascend310P3/310P_aoe",
        plots=False,
    )
    assert list(report["ratios"]) == [
        "cpu-onnxruntime-fp32/T4-trt-fp16",
        "Ascend310P3/guide 310P_aoe",
    ]
    assert report["ratios"]["Ascend310P3/guide 310P_aoe"]["by_batch"]["1"] == pytest.approx(
        900 / 1033.16
    )
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "Ascend310P3/guide 310P_aoe divides a per-chip figure by a per-card one" in markdown
    csv_text = (tmp_path / "out" / "comparison.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    ratio_rows = [r for r in rows if r["kind"] == "ratio"]
    assert {r["column"] for r in ratio_rows} == set(report["ratios"])


def test_parse_ratios_rejects_bad_pairs() -> None:
    assert parse_ratios("a/b,c/d") == [("a", "b"), ("c", "d")]
    for text in ("a", "a/b/c", "/b", ","):
        with pytest.raises(PcbError):
            parse_ratios(text)


def test_published_columns_equal_facts_section_6(tmp_path: Path) -> None:
    published = published_section()
    assert list(published["columns"]) == list(FACTS_TABLE)
    assert published["scope"] == "card"
    assert "not measured here" in published["source"]
    for name, numbers in FACTS_TABLE.items():
        *per_batch, best = numbers
        assert GUIDE_THROUGHPUT[name] == dict(zip(FACTS_BATCHES, per_batch))
        column = published["columns"][name]
        for batch, value in zip(FACTS_BATCHES, per_batch):
            assert column["images_per_s"][str(batch)] == value
        assert column["best"]["images_per_s"] == best == GUIDE_BEST[name]
    # The report shows them as printed in the guide, in columns marked published.
    layout = make_run(tmp_path / "run", perf={CPU: {1: 20.0}})
    report = write_comparison([layout.root], plots=False)
    headers, rows = throughput_rows(report)
    cells = {row[0]: dict(zip(headers, row)) for row in rows}
    for name, numbers in FACTS_TABLE.items():
        header = f"guide {name}"
        assert cells["source"][header] == "published[guide]"
        assert cells["scope"][header] == "per card"
        for batch, value in zip(FACTS_BATCHES, numbers):
            assert cells[str(batch)][header] == f"{value:g}"
        assert cells["best"][header].startswith(f"{numbers[-1]:g} (bs")
    # And in the CSV, one row per published figure, each saying it was not measured here.
    csv_rows = list(csv.DictReader(io.StringIO((layout.root / "comparison.csv").read_text())))
    published_rows = [r for r in csv_rows if r["kind"] == "published"]
    for name, numbers in FACTS_TABLE.items():
        rows = {r["batch_size"]: r for r in published_rows if r["column"] == name}
        for batch, value in zip(FACTS_BATCHES, numbers):
            assert float(rows[str(batch)]["value"]) == value
            assert rows[str(batch)]["scope"] == "card"
            assert "not measured here" in rows[str(batch)]["note"]
        best = [r for r in published_rows if r["column"] == name and r["metric"].startswith("best")]
        assert [float(r["value"]) for r in best] == [numbers[-1]]


def test_guide_ratio_columns_reproduced() -> None:
    """The guide's own 310P_aoe/310 and 310P_aoe/T4 columns follow from the same rule."""
    published = published_section()
    ratios = ratio_section([("310P_aoe", "310"), ("310P_aoe", "T4")], {}, published)
    over_310 = ratios["guide 310P_aoe/guide 310"]
    over_t4 = ratios["guide 310P_aoe/guide T4"]
    guide_over_310 = [1.879538938, 1.82350292, 1.620260086, 1.415967874, 1.652054695, 1.71644542]
    guide_over_t4 = [1.37938224, 1.95479237, 1.61106487, 1.33650037, 1.28791759, 1.29228829]
    # The guide divided unrounded figures: its ratios agree to about five digits.
    for batch, a, b in zip(FACTS_BATCHES, guide_over_310, guide_over_t4):
        assert over_310["by_batch"][str(batch)] == pytest.approx(a, rel=1e-5)
        assert over_t4["by_batch"][str(batch)] == pytest.approx(b, rel=1e-5)
    assert over_310["best"] == pytest.approx(1.67468, abs=1e-5)
    assert over_t4["best"] == pytest.approx(1.49838, abs=1e-5)


def two_cpu_runs(tmp_path: Path, stamps: tuple[str | None, str | None]) -> list[Path]:
    roots = []
    for name, stamp, ips in (("a", stamps[0], 20.0), ("b", stamps[1], 25.0)):
        extra = {"timestamp": stamp} if stamp else {}
        layout = make_run(
            tmp_path / name,
            perf={CPU: {1: ips, 4: ips + 5}},
            perf_extra=extra,
            mtime="2026-01-01T00:00:00+00:00",
        )
        roots.append(layout.root)
    return roots


def test_same_platform_and_batch_kept_and_latest_shown(tmp_path: Path) -> None:
    # Run a was measured later, though given first: it is the one shown.
    roots = two_cpu_runs(tmp_path, ("2026-03-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"))
    report = write_comparison(roots, out=tmp_path / "out", plots=False)
    cell = report["throughput"]["cpu-onnxruntime-fp32"]["cells"]["1"]
    assert [m["images_per_s"] for m in cell["measurements"]] == [25.0, 20.0]  # oldest first
    assert cell["measurements"][cell["shown"]]["source"]["run"] == "a"
    assert report["throughput"]["cpu-onnxruntime-fp32"]["images_per_s"] == {"1": 20.0, "4": 25.0}
    headers, rows = throughput_rows(report)
    assert headers.count("cpu-onnxruntime-fp32") == 1
    assert rows[2][1] == "wall (pcb)" and rows[3][1] == "20.0*"
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert (
        "\\* cpu-onnxruntime-fp32 bs1, bs4: measured by several runs, never averaged; shown is "
        "the latest, from run a[^1] (2026-03-01T00:00:00+00:00); not shown: run b[^2]: "
        "25.0 (bs1), 30.0 (bs4)."
    ) in markdown
    rows_csv = list(csv.DictReader(io.StringIO((tmp_path / "out" / "comparison.csv").read_text())))
    bs1 = [r for r in rows_csv if r["metric"] == "images_per_s" and r["batch_size"] == "1"]
    bs1 = [r for r in bs1 if r["kind"] == "measured"]
    assert sorted((r["run"], r["shown"]) for r in bs1) == [("a", "True"), ("b", "False")]


def test_timestamps_in_utc_z_form(tmp_path: Path) -> None:
    roots = two_cpu_runs(tmp_path, ("2026-03-01T00:00:00Z", "2026-02-01T00:00:00+00:00"))
    report = write_comparison(roots, out=tmp_path / "out", plots=False)
    cell = report["throughput"]["cpu-onnxruntime-fp32"]["cells"]["1"]
    assert cell["measurements"][cell["shown"]]["source"]["run"] == "a"


def test_show_all_gives_each_run_a_column(tmp_path: Path) -> None:
    roots = two_cpu_runs(tmp_path, ("2026-03-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"))
    report = write_comparison(roots, out=tmp_path / "out", show="all", plots=False)
    headers, rows = throughput_rows(report)
    assert headers[1:3] == ["cpu-onnxruntime-fp32 @ b", "cpu-onnxruntime-fp32 @ a"]
    assert rows[3][1:3] == ["25.0", "20.0"]
    assert rows[-1][1:3] == ["30.0 (bs4)", "25.0 (bs4)"]
    assert report["table"]["show"] == "all"


def test_latest_falls_back_to_file_time_then_run_order(tmp_path: Path) -> None:
    roots = two_cpu_runs(tmp_path, (None, None))  # same file time: the later --run wins
    report = write_comparison(roots, out=tmp_path / "out", plots=False)
    cell = report["throughput"]["cpu-onnxruntime-fp32"]["cells"]["1"]
    shown = cell["measurements"][cell["shown"]]
    assert shown["source"]["run"] == "b"
    assert shown["source"]["timestamp_source"].startswith("file modification time")
    assert shown["source"]["host_source"].startswith("assumed")


def test_different_checkpoints_refused_unless_forced(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", perf={CPU: {1: 20.0}})
    b = make_run(tmp_path / "b", perf={NPU: {1: 900.0}}, md5="0" * 32)
    with pytest.raises(PcbError) as error:
        write_comparison([a.root, b.root], out=tmp_path / "out", plots=False)
    message = str(error.value)
    assert "different checkpoints" in message and "0" * 32 in message
    assert "c5bc5ddabcbcc45f127ead797fe8cb35" in message and "--force" in message
    assert not (tmp_path / "out").exists()
    report = write_comparison([a.root, b.root], out=tmp_path / "out", force=True, plots=False)
    assert report["warnings"][0].startswith("FORCED: different checkpoints")
    assert report["checkpoint_md5"] is None
    assert (
        "> **Warning**: FORCED: different checkpoints"
        in (tmp_path / "out" / "comparison.md").read_text()
    )


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"num_gallery": 19732}, "gallery 19732"),
        ({"dataset_root": "/data/DukeMTMC-reID"}, "DukeMTMC-reID"),
        ({"synthetic": True, "num_query": 48}, "synthetic demo"),
    ],
)
def test_different_datasets_refused(tmp_path: Path, change: dict, shown: str) -> None:
    a = make_run(tmp_path / "a", evals=[evaluation("onnxruntime")])
    b = make_run(tmp_path / "b", evals=[evaluation("ais_bench", **change)])
    with pytest.raises(PcbError, match="different datasets") as error:
        write_comparison([a.root, b.root], out=tmp_path / "out", plots=False)
    assert shown in str(error.value) and "--force" in str(error.value)
    report = write_comparison([a.root, b.root], out=tmp_path / "out", force=True, plots=False)
    assert any("different datasets" in w for w in report["warnings"])


def test_same_dataset_at_another_path_is_the_same(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", evals=[evaluation("onnxruntime")])
    moved = evaluation("ais_bench", dataset_root="/mnt/other/Market-1501-v15.09.15")
    b = make_run(tmp_path / "b", evals=[moved])
    report = write_comparison([a.root, b.root], out=tmp_path / "out", plots=False)
    assert report["warnings"] == []
    assert report["dataset"].startswith("Market-1501-v15.09.15 (query 3368")


def test_unknown_checkpoint_is_a_warning(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", perf={CPU: {1: 20.0}})
    b = make_run(tmp_path / "b", perf={NPU: {1: 900.0}}, md5=None)
    report = write_comparison([a.root, b.root], out=tmp_path / "out", plots=False)
    assert report["warnings"] == [
        "checkpoint of run b unknown (no model/export.json)",
        "dataset of run a unknown (no eval/*.json)",
        "dataset of run b unknown (no eval/*.json)",
    ]


def test_same_backend_in_two_runs_and_same_folder_names(tmp_path: Path) -> None:
    a = make_run(tmp_path / "x" / "run", evals=[evaluation("onnxruntime", top1=0.92)])
    b = make_run(tmp_path / "y" / "run", evals=[evaluation("onnxruntime", top1=0.91)])
    report = write_comparison([a.root, b.root], out=tmp_path / "out", plots=False)
    assert [r["label"] for r in report["runs"]] == ["x/run", "y/run"]
    assert set(report["accuracy"]) == {"onnxruntime @ x/run", "onnxruntime @ y/run"}
    assert report["accuracy"]["onnxruntime @ x/run"]["passed"] is True
    assert report["accuracy"]["onnxruntime @ y/run"]["passed"] is False  # 1.1 points down
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    rows = markdown_table(markdown, "backend")
    assert rows[0][:2] == ["backend", "run"]
    assert [row[1] for row in rows[2:]] == ["x/run", "y/run"]


def test_same_folder_twice_refused(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", perf={CPU: {1: 20.0}})
    with pytest.raises(PcbError, match="more than once"):
        write_comparison([a.root, tmp_path / "a" / ".." / "a"], out=tmp_path / "out")


def test_reference_and_parity_in_one_run(tmp_path: Path) -> None:
    parity = {"cos_min": 0.99991, "cos_mean": 0.99998, "below_threshold": 0, "top1_diff": 0.0}
    layout = make_run(
        tmp_path / "run",
        evals=[
            evaluation("onnxruntime", top1=0.915),
            evaluation("ais_bench", top1=0.89, parity=parity),
        ],
    )
    report = write_comparison([layout.root], plots=False)
    npu = report["accuracy"]["ais_bench"]
    assert npu["parity"] == parity
    assert npu["reference"]["run"] == "run"
    assert npu["reference"]["passed"] is False  # 2.5 points below onnxruntime
    assert npu["passed"] is False  # 3.2 points below the guide
    markdown = layout.report_md.read_text()
    assert "## Feature parity" in markdown
    accuracy = markdown_table(markdown, "backend")
    assert [row[0] for row in accuracy[1:]] == [
        "guide (published)",
        "onnxruntime[^1]",
        "ais_bench[^2]",  # after its reference
    ]
    assert accuracy[3][-2:] == ["-2.50 / +0.00 / +0.00 / +0.00 FAIL", "FAIL"]
    assert accuracy[2][-2:] == ["(reference)", "PASS"]
    parity_table = markdown.split("## Feature parity")[1]
    assert markdown_table(parity_table, "backend") == [
        ["backend", "cos_min", "cos_mean", "below_threshold", "top1_diff"],
        ["ais_bench", "0.99991", "0.99998", "0", "0"],
    ]


def test_cli_several_runs_default_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = three_hosts(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["report", "--no-plots"]
    for root in roots:
        argv += ["--run", str(root)]
    assert main(argv) == 0
    out = tmp_path / "results" / "comparison"
    assert (out / "comparison.json").is_file() and (out / "comparison.csv").is_file()
    # Several runs never overwrite one run's own report.
    assert not any((root / "report.json").exists() for root in roots)
    assert "written: results/comparison/comparison.json" in capsys.readouterr().out
