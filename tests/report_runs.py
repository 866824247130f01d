"""Small run folders with real record files, as the stages write them, for the report tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pcb.fileio import atomic_write_json
from pcb.layout import RunLayout
from pcb.perf import LatencyStats, PerfRecord, write_perf_records

PCB_MD5 = "c5bc5ddabcbcc45f127ead797fe8cb35"
MARKET = "/data/Market-1501-v15.09.15"

# (backend, tool, scope, platform) of each kind of platform a backend writes.
CPU = ("onnxruntime", "onnxruntime", "process", "cpu-onnxruntime-fp32")
NPU = ("ais_bench", "ais_bench", "chip", "Ascend310P3")
GPU = ("tensorrt", "trtexec", "gpu", "T4-trt-fp16")


def evaluation(
    backend: str = "onnxruntime",
    top1: float = 0.915,
    top5: float = 0.970,
    top10: float = 0.975,
    mAP: float = 0.774,
    **extra: Any,
) -> dict[str, Any]:
    record = {
        "backend": backend,
        "dataset_root": MARKET,
        "synthetic": False,
        "num_query": 3368,
        "num_gallery": 15913,
        "num_gallery_ids": 751,
        "num_valid_queries": 3368,
        "top1": top1,
        "top5": top5,
        "top10": top10,
        "mAP": mAP,
        "cmc": [top1] + [top5] * 4 + [top10] * 45,
        "ap_variant": "non-interpolated",
    }
    record.update(extra)
    return record


def perf_record(
    kind: tuple[str, str, str, str], batch: int, ips: float, **extra: Any
) -> PerfRecord:
    backend, tool, scope, platform = kind
    mean = 1000.0 * batch / ips
    return PerfRecord(
        platform=platform,
        backend=backend,
        batch_size=batch,
        images_per_s=ips,
        latency=LatencyStats(mean, mean, mean, mean, mean),
        iterations=3,
        scope=scope,
        tool=tool,
        tool_version="9.9",
        device=f"{platform} device",
        extra=dict(extra),
    )


def export_record(md5: str = PCB_MD5, **extra: Any) -> dict[str, Any]:
    return {
        "checkpoint": "data/PCB_3_7.pt",
        "checkpoint_md5": md5,
        "onnx_md5": "ab" * 16,
        "opset": 11,
        "max_abs_diff": 1e-6,
        "torch_version": "2.13.0",
        "onnx_version": "1.17.0",
        "onnxruntime_version": "1.20.0",
        **extra,
    }


def make_run(
    root: Path,
    perf: Mapping[tuple[str, str, str, str], Mapping[int, float]] | None = None,
    evals: list[dict[str, Any]] | None = None,
    md5: str | None = PCB_MD5,
    perf_extra: Mapping[str, Any] | None = None,
    mtime: str | None = None,
) -> RunLayout:
    """A run folder: model/export.json, eval/<backend>.json, perf/<backend>.json.

    `mtime` (ISO) sets the record files' modification time, the timestamp a record without
    one falls back to.
    """
    layout = RunLayout(root)
    if md5 is not None:
        atomic_write_json(layout.export_record, export_record(md5))
    for record in evals or []:
        atomic_write_json(layout.eval_path(record["backend"]), record)
    for kind, by_batch in (perf or {}).items():
        records = [perf_record(kind, b, v, **(perf_extra or {})) for b, v in by_batch.items()]
        write_perf_records(layout.perf_path(kind[0]), records)
    if mtime is not None:
        stamp = datetime.fromisoformat(mtime).timestamp()
        for path in [*root.glob("eval/*.json"), *root.glob("perf/*.json")]:
            os.utime(path, (stamp, stamp))
    return layout


def markdown_table(markdown: str, first_header: str) -> list[list[str]]:
    """The rows (header first, the |---| line dropped) of the Markdown table whose first column
    is headed `first_header`, each cell stripped of its padding."""
    rows: list[list[str]] = []
    for line in markdown.splitlines():
        cells = []
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not rows:
            if cells and cells[0] == first_header:
                rows.append(cells)
            continue
        if not cells:
            break
        if not set(line) <= set("|-: "):
            rows.append(cells)
    return rows
