"""Shared by the Ascend tests: the tool doubles on a subprocess's PATH, a small run folder
(tiny model, bins, image lists), the fixtures folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_model import make_tiny_model

from pcb.layout import RunLayout
from pcb.orchestration.settings import Settings, settings_from_config

TESTS = Path(__file__).resolve().parent
REAL = TESTS / "fixtures" / "real"
DOUBLES = TESTS / "doubles" / "ascend"


def fixture_path(name: str) -> Path:
    """A real tool output by file name, from whichever tests/fixtures/real/<tool>/ holds it."""
    found = sorted(REAL.glob(f"*/{name}"))
    if len(found) != 1:
        raise FileNotFoundError(f"fixture {name}: {len(found)} matches under {REAL}")
    return found[0]


def fixture_text(name: str) -> str:
    return fixture_path(name).read_text(encoding="utf-8")


def use_doubles(monkeypatch: pytest.MonkeyPatch, table: str = "npu_smi_310P3_duo.txt") -> None:
    """atc, aoe, npu-smi and `python -m ais_bench` resolve to the doubles in this process's
    subprocesses, as the toolkit's set_env.sh makes them resolve to the real tools."""
    import os

    monkeypatch.setenv("PATH", f"{DOUBLES / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONPATH", str(DOUBLES / "python"))
    monkeypatch.setenv("PCB_DOUBLE_PYTHON", sys.executable)
    monkeypatch.setenv("NPU_SMI_DOUBLE_TABLE", str(fixture_path(table)))
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(DOUBLES))
    monkeypatch.delenv("PCB_NPU_CONTAINER_DEVICES", raising=False)
    monkeypatch.delenv("AIS_BENCH_DOUBLE_LEGACY", raising=False)
    monkeypatch.delenv("AIS_BENCH_DOUBLE_SUMMARY", raising=False)
    monkeypatch.delenv("PCB_DOUBLE_CHIPS", raising=False)
    monkeypatch.delenv("ATC_DOUBLE_FAIL", raising=False)
    monkeypatch.delenv("AIS_BENCH_DOUBLE_PER_BATCH", raising=False)
    monkeypatch.delenv("PCB_DOUBLE_CHECK_DEVICES", raising=False)


def stems(split: str, count: int) -> list[str]:
    offset = 0 if split == "query" else 100
    return [f"{i + 1:04d}_c{i % 6 + 1}s1_{offset + i:06d}_00" for i in range(count)]


def make_run(root: Path, sizes: dict[str, int] | None = None) -> RunLayout:
    """A run with the tiny model and random bins + image lists, as export and preprocess
    would leave it."""
    sizes = {"query": 5, "gallery": 7} if sizes is None else sizes
    layout = RunLayout(root)
    make_tiny_model(layout.onnx_path)
    rng = np.random.default_rng(0)
    for split, count in sizes.items():
        lines = []
        for index, stem in enumerate(stems(split, count)):
            path = layout.bins_dir(split) / f"{stem}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            rng.standard_normal((3, 384, 128), dtype=np.float32).tofile(path)
            lines.append(f"{index} bins/{split}/{stem}.bin 64 128")
        layout.info_path(split).write_text("\n".join(lines) + "\n")
    return layout


def tiny_chip_settings(root: Path, **overrides: Any) -> Settings:
    """`invoke full --chip 310P3`'s settings at the smallest size: a 4-identity demo dataset
    under root/data, results under root/results, two batch sizes, three NPU loops."""
    from pcb.demo import write_dataset

    data, results = root / "data", root / "results"
    for folder in (data, results):
        folder.mkdir(parents=True, exist_ok=True)
    write_dataset(data / "demo", identities=4)
    config = {
        "chip": "310P3",
        "devices": "0",
        "data_dir": str(data),
        "dataset": str(data / "demo" / "Market-1501-v15.09.15"),
        "results_dir": str(results),
        "batch_sizes": [1, 2],
        "infer_batch_size": 4,
        "npu_loop": 3,
        "npu_warmup": 0,
        "quiet": True,
    }
    return settings_from_config({**config, **overrides})
