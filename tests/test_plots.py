"""The report's PNG figures: written, valid, labelled, and skipped cleanly without matplotlib."""

from __future__ import annotations

import builtins
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from report_runs import CPU, NPU, evaluation, make_run

from pcb.report import plots
from pcb.report.comparison import write_comparison

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed"
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width > 600 and height > 400
        # Not a blank canvas: the lines and text leave many colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Each figure drawn, by file name, while still writing the file."""
    figures: dict[str, Any] = {}
    save = plots._save

    def keep(figure: Any, path: Path) -> None:
        figures[Path(path).name] = figure
        save(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


@needs_matplotlib
def test_plots_written_with_the_report(tmp_path: Path, captured: dict[str, Any]) -> None:
    layout = make_run(
        tmp_path / "run",
        perf={CPU: {1: 20.0, 4: 30.0, 8: 28.0}, NPU: {1: 900.0, 4: 2000.0}},
        evals=[evaluation("onnxruntime"), evaluation("ais_bench", top1=0.91)],
    )
    write_comparison([layout.root])
    for name in ("throughput.png", "cmc.png"):
        assert_png(layout.root / name)
    markdown = (layout.root / "comparison.md").read_text()
    assert "![Throughput versus batch size](throughput.png)" in markdown
    assert "![CMC curve, rank 1 to 50](cmc.png)" in markdown

    throughput = captured["throughput.png"].axes[0]
    assert throughput.get_xscale() == "log" and throughput.get_yscale() == "log"
    assert "batch size" in throughput.get_xlabel() and "images/s" in throughput.get_ylabel()
    labels = [t.get_text() for t in captured["throughput.png"].legends[0].get_texts()]
    assert labels[:2] == [
        "Ascend310P3: measured, per chip",
        "cpu-onnxruntime-fp32: measured, per process",
    ]
    assert "310P_aoe: published (guide 7.4), per card" in labels
    styles = {line.get_label(): line.get_linestyle() for line in throughput.get_lines()}
    assert styles["T4: published (guide 7.4), per card"] == "--"
    assert styles["Ascend310P3: measured, per chip"] == "-"
    assert "synthetic" not in throughput.get_title()

    cmc = captured["cmc.png"].axes[0]
    curves = [line for line in cmc.get_lines() if line.get_linestyle() == "-"]
    assert len(curves) == 2 and len(curves[0].get_xdata()) == 50
    assert cmc.get_xlabel() == "rank" and "%" in cmc.get_ylabel()
    assert any("guide, published" in t.get_text() for t in cmc.get_legend().get_texts())


@needs_matplotlib
def test_demo_titles_say_synthetic(tmp_path: Path, captured: dict[str, Any]) -> None:
    layout = make_run(
        tmp_path / "run", perf={CPU: {1: 20.0}}, evals=[evaluation(synthetic=True, top1=0.5)]
    )
    write_comparison([layout.root])
    for name in ("throughput.png", "cmc.png"):
        title = captured[name].axes[0].get_title()
        assert "synthetic data, untrained weights" in title
    labels = [t.get_text() for t in captured["cmc.png"].axes[0].get_legend().get_texts()]
    assert labels[0].endswith("(synthetic)")


@needs_matplotlib
def test_only_the_plots_with_data(tmp_path: Path) -> None:
    layout = make_run(tmp_path / "run", evals=[evaluation()])
    (layout.root / "throughput.png").write_bytes(b"stale")
    write_comparison([layout.root])
    assert not (layout.root / "throughput.png").exists()  # a stale figure would mislead
    assert_png(layout.root / "cmc.png")
    assert "throughput.png" not in (layout.root / "comparison.md").read_text()


def test_report_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    layout = make_run(tmp_path / "run", perf={CPU: {1: 20.0}}, evals=[evaluation()])
    (layout.root / "cmc.png").write_bytes(b"stale")
    report = write_comparison([layout.root])
    assert report["accuracy"]["onnxruntime"]["passed"] is True
    assert not list(layout.root.glob("*.png"))
    assert "note: plots skipped: matplotlib is not installed" in capsys.readouterr().out
    assert ".png" not in (layout.root / "comparison.md").read_text()
