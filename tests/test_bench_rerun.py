"""What makes a re-run with nothing changed cheap: export, perf and digests are not redone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcb.fileio import file_md5
from pcb.layout import RunLayout
from pcb.record.digest import CACHE_DIR, cached_md5, digest_store

pytest.importorskip("onnxruntime")
from tiny_model import make_tiny_model  # noqa: E402

from pcb.infer import run_perf  # noqa: E402


def test_md5_cache_hits_and_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"a" * 1000)
    assert cached_md5(path, tmp_path) == file_md5(path)
    digest_store(tmp_path).save()
    assert not (tmp_path / CACHE_DIR).exists()  # too fresh to remember (racy)
    monkeypatch.setattr("pcb.record.digest.RACY_NS", 0)  # as if the change were long ago
    monkeypatch.setattr("pcb.record.digest._STORES", {})  # a new process: nothing hashed yet
    assert cached_md5(path, tmp_path) == file_md5(path)
    digest_store(tmp_path).save()
    assert any((tmp_path / CACHE_DIR).glob("*.json"))
    path.write_bytes(b"b" * 1000)  # same size, in place: mtime moves on
    assert cached_md5(path, tmp_path) == file_md5(path)
    assert cached_md5(path, None) == file_md5(path)


def test_export_again_is_skipped_unless_something_changed(
    tmp_path: Path, demo_checkpoint: Path, capsys
) -> None:
    pytest.importorskip("torch")
    from pcb.export import current_export, export_onnx

    layout = RunLayout(tmp_path / "run")
    first = export_onnx(demo_checkpoint, layout)
    written = layout.onnx_path.stat().st_mtime_ns
    capsys.readouterr()
    again = export_onnx(demo_checkpoint, layout)
    assert "not exported again" in capsys.readouterr().out
    assert again.onnx_md5 == first.onnx_md5
    assert layout.onnx_path.stat().st_mtime_ns == written
    assert current_export(demo_checkpoint, layout, opset=12) is None
    assert current_export(demo_checkpoint, layout, static_batch_sizes=[2]) is None
    changed = tmp_path / "other.pt"
    changed.write_bytes(demo_checkpoint.read_bytes() + b"\0")
    assert current_export(changed, layout) is None
    layout.onnx_path.write_bytes(layout.onnx_path.read_bytes()[:-1])
    assert current_export(demo_checkpoint, layout) is None


@pytest.fixture()
def tiny_run(tmp_path: Path) -> RunLayout:
    layout = RunLayout(tmp_path / "run")
    make_tiny_model(layout.onnx_path)
    return layout


def test_perf_keeps_an_identical_measurement(tiny_run: RunLayout, capsys) -> None:
    first = run_perf(tiny_run, batch_sizes=(1, 2), iterations=2, threads=1, quiet=True)
    capsys.readouterr()
    kept = run_perf(tiny_run, batch_sizes=(1, 2), iterations=2, threads=1, quiet=True)
    assert "kept:" in capsys.readouterr().out
    assert kept == first
    forced = run_perf(tiny_run, batch_sizes=(1, 2), iterations=2, threads=1, quiet=True, force=True)
    assert [r.latency for r in forced] != [r.latency for r in first]


@pytest.mark.parametrize(
    "change",
    [
        {"batch_sizes": (1, 3)},
        {"iterations": 3},
        {"threads": 2},
        {"warmup": 0},
    ],
)
def test_perf_measures_again_when_settings_differ(tiny_run: RunLayout, capsys, change) -> None:
    settings = {"batch_sizes": (1, 2), "iterations": 2, "threads": 1, "warmup": 1}
    run_perf(tiny_run, quiet=True, **settings)
    capsys.readouterr()
    run_perf(tiny_run, quiet=True, **{**settings, **change})
    assert "kept:" not in capsys.readouterr().out


def test_perf_measures_again_for_a_new_model(tiny_run: RunLayout, capsys) -> None:
    run_perf(tiny_run, batch_sizes=(1,), iterations=1, threads=1, quiet=True)
    payload = json.loads(tiny_run.perf_path("onnxruntime").read_text())
    payload["records"][0]["extra"]["model_md5"] = "0" * 32
    tiny_run.perf_path("onnxruntime").write_text(json.dumps(payload))
    capsys.readouterr()
    run_perf(tiny_run, batch_sizes=(1,), iterations=1, threads=1, quiet=True)
    assert "kept:" not in capsys.readouterr().out


def test_rerun_uses_the_pipelines_demo_settings() -> None:
    from pcb.bench.rerun import demo_settings
    from pcb.orchestration.pipeline import full_pipeline

    settings = demo_settings()
    assert settings.demo and settings.executor == "local" and settings.run == "demo"
    stages = [call.stage for call in full_pipeline(settings)]
    assert stages[0] == "demo-data" and "perf" in stages and stages[-1] == "report"
    assert np.all([not Path(str(a)).is_absolute() for c in full_pipeline(settings) for a in c.args])
