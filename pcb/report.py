"""Every stage's records -> one comparison: terminal tables, report.md and report.json.

The row builders are pure functions of the records, so they are tested without files; the
file reading and writing lives in `load_inputs` and `write_report` only.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from .constants import GUIDE_ACCURACY, GUIDE_TOLERANCE
from .errors import PcbError
from .fileio import atomic_write_json, atomic_write_text, read_json
from .layout import RunLayout
from .perf import PerfRecord, read_perf_records

METRICS = ("top1", "top5", "top10", "mAP")
METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "top10": "top-10", "mAP": "mAP"}
NOT_COMPARABLE = "not comparable (synthetic data, untrained weights)"
PAPER_MAP = 77.4  # arXiv 1711.09349, PCB without RPP; the guide publishes no mAP
MAP_FOOTNOTE = (
    f"mAP: the guide publishes no value; the PCB paper (arXiv 1711.09349) reports {PAPER_MAP} % "
    "(rank-1 92.3 %)."
)
CRITERION = (
    f"PASS = at most {GUIDE_TOLERANCE * 100:g} point below the guide's published value "
    "(the guide's criterion: accuracy drop within 1 %)."
)
ACCURACY_HEADERS = ["backend", "metric", "measured %", "guide %", "diff (points)", "verdict"]
# Rounding slack so 91.1 against 92.1 counts as exactly one point down, not 1.0000000001.
_EPSILON = 1e-9


@dataclass(frozen=True)
class ReportInputs:
    export: dict[str, Any] | None
    evaluations: list[dict[str, Any]]
    perf: list[PerfRecord]
    inference: dict[str, dict[str, Any]]
    demo: bool


# ---------------------------------------------------------------- pure: accuracy


def compare_metric(
    measured: float, published: float, demo: bool, tolerance: float = GUIDE_TOLERANCE
) -> tuple[float, str]:
    """(difference in points, verdict) of one fraction against the guide's."""
    diff_points = (measured - published) * 100.0
    if demo:
        return diff_points, NOT_COMPARABLE
    passed = diff_points >= -tolerance * 100.0 - _EPSILON
    return diff_points, "PASS" if passed else "FAIL"


def accuracy_rows(evaluation: Mapping[str, Any], demo: bool) -> list[list[str]]:
    """One row per metric of one backend's evaluation record (fractions in, % out)."""
    backend = str(evaluation.get("backend", "?"))
    rows = []
    for metric in METRICS:
        measured = float(evaluation[metric])
        if metric in GUIDE_ACCURACY:
            published = GUIDE_ACCURACY[metric]
            diff, verdict = compare_metric(measured, published, demo)
            guide_text, diff_text = f"{published * 100:.1f}", f"{diff:+.2f}"
        else:
            guide_text, diff_text, verdict = "n/a", "n/a", "n/a (see note)"
        rows.append(
            [
                backend,
                METRIC_LABELS[metric],
                f"{measured * 100:.2f}",
                guide_text,
                diff_text,
                verdict,
            ]
        )
    return rows


def accuracy_summary(evaluation: Mapping[str, Any], demo: bool) -> dict[str, Any]:
    """The JSON form of the same comparison, with an overall verdict (None for a demo)."""
    comparison = {}
    for metric, published in GUIDE_ACCURACY.items():
        diff, verdict = compare_metric(float(evaluation[metric]), published, demo)
        comparison[metric] = {"guide": published, "diff_points": round(diff, 4), "verdict": verdict}
    passed = None if demo else all(c["verdict"] == "PASS" for c in comparison.values())
    summary = {k: evaluation[k] for k in (*METRICS, "cmc", "ap_variant") if k in evaluation}
    for key in ("num_query", "num_gallery", "num_gallery_ids", "num_valid_queries"):
        if key in evaluation:
            summary[key] = evaluation[key]
    summary.update(comparison=comparison, passed=passed)
    return summary


# ---------------------------------------------------------------- pure: throughput


def throughput_matrix(records: Sequence[PerfRecord]) -> dict[str, dict[int, float]]:
    """platform -> batch size -> images/s, platforms in the order first seen."""
    matrix: dict[str, dict[int, float]] = {}
    for record in records:
        matrix.setdefault(record.platform, {})[record.batch_size] = record.images_per_s
    return matrix


def best_throughput(by_batch: Mapping[int, float]) -> tuple[int, float]:
    """(batch size, images/s) of the fastest batch; the smaller batch wins a tie."""
    batch = max(sorted(by_batch), key=lambda b: by_batch[b])
    return batch, by_batch[batch]


def throughput_rows(
    matrix: Mapping[str, Mapping[int, float]],
) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): a row per batch size, a column per platform, then a `best` row."""
    platforms = list(matrix)
    batches = sorted({b for by_batch in matrix.values() for b in by_batch})
    rows = [
        [str(b)] + [_ips(matrix[p][b]) if b in matrix[p] else "-" for p in platforms]
        for b in batches
    ]
    best = ["best"]
    for p in platforms:
        batch, value = best_throughput(matrix[p])
        best.append(f"{_ips(value)} (bs{batch})")
    rows.append(best)
    return ["batch", *platforms], rows


def _ips(value: float) -> str:
    return f"{value:.1f}"


# ---------------------------------------------------------------- pure: the report


def build_report(
    inputs: ReportInputs, root: Path, versions: Mapping[str, str | None], host: str, stamp: str
) -> dict[str, Any]:
    export = inputs.export or {}
    accuracy = {
        str(e.get("backend", "?")): accuracy_summary(e, inputs.demo) for e in inputs.evaluations
    }
    first = inputs.evaluations[0] if inputs.evaluations else {}
    counts = {
        k: first[k]
        for k in ("num_query", "num_gallery", "num_gallery_ids", "num_valid_queries")
        if k in first
    }
    throughput: dict[str, Any] = {}
    for name, by_batch in throughput_matrix(inputs.perf).items():
        sample = next(r for r in inputs.perf if r.platform == name)
        batch, value = best_throughput(by_batch)
        throughput[name] = {
            "backend": sample.backend,
            "tool": sample.tool,
            "tool_version": sample.tool_version,
            "device": sample.device,
            "scope": sample.scope,
            "images_per_s": {str(b): v for b, v in sorted(by_batch.items())},
            "best": {"batch_size": batch, "images_per_s": value},
        }
    backends = sorted({*accuracy, *(r.backend for r in inputs.perf)})
    return {
        "run": str(root),
        "demo": inputs.demo,
        "dataset": _dataset_name(first, inputs.demo),
        "counts": counts,
        "checkpoint": export.get("checkpoint"),
        "checkpoint_md5": export.get("checkpoint_md5"),
        "onnx_md5": export.get("onnx_md5"),
        "opset": export.get("opset"),
        "export_max_abs_diff": export.get("max_abs_diff"),
        "backends": backends,
        "guide": {"accuracy": dict(GUIDE_ACCURACY), "tolerance": GUIDE_TOLERANCE},
        "accuracy": accuracy,
        "throughput": throughput,
        "inference": inputs.inference,
        "perf_records": [r.to_dict() for r in inputs.perf],
        "versions": dict(versions),
        "host": host,
        "timestamp": stamp,
    }


def _dataset_name(evaluation: Mapping[str, Any], demo: bool) -> str:
    name = str(evaluation.get("dataset", "Market-1501"))
    return f"{name} (synthetic demo)" if demo else name


def _accuracy_table(report: Mapping[str, Any], tablefmt: str) -> str | None:
    rows = []
    for backend, summary in report["accuracy"].items():
        rows += accuracy_rows({"backend": backend, **summary}, report["demo"])
    if not rows:
        return None
    align = ("left", "left", "right", "right", "right", "left")
    return tabulate(
        rows, headers=ACCURACY_HEADERS, tablefmt=tablefmt, disable_numparse=True, colalign=align
    )


def _throughput_table(report: Mapping[str, Any], tablefmt: str) -> str | None:
    matrix = {
        name: {int(b): v for b, v in entry["images_per_s"].items()}
        for name, entry in report["throughput"].items()
    }
    if not matrix:
        return None
    headers, rows = throughput_rows(matrix)
    align = ("left",) + ("right",) * (len(headers) - 1)
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=align)


def _accuracy_notes(report: Mapping[str, Any]) -> list[str]:
    notes = [] if report["demo"] else [CRITERION]
    notes.append(MAP_FOOTNOTE)
    variants = sorted(
        {str(s["ap_variant"]) for s in report["accuracy"].values() if "ap_variant" in s}
    )
    if variants:
        notes.append(f"AP variant: {', '.join(variants)}.")
    return notes


def _platform_lines(report: Mapping[str, Any]) -> list[str]:
    return [
        f"{name}: {e['device'] or '?'} via {e['tool']} {e['tool_version']} (scope: {e['scope']})"
        for name, e in report["throughput"].items()
    ]


def _dataset_line(report: Mapping[str, Any]) -> str:
    c = report["counts"]
    if not c:
        return f"dataset: {report['dataset']}"
    return (
        f"dataset: {report['dataset']}, query {c.get('num_query', '?')}, "
        f"gallery {c.get('num_gallery', '?')} ({c.get('num_gallery_ids', '?')} ids), "
        f"valid queries {c.get('num_valid_queries', '?')}"
    )


def _checkpoint_line(report: Mapping[str, Any]) -> str:
    if report["checkpoint"] is None:
        return "checkpoint: unknown (no model/export.json)"
    return f"checkpoint: {report['checkpoint']} (md5 {report['checkpoint_md5']})"


def render_terminal(report: Mapping[str, Any]) -> str:
    parts = []
    if report["demo"]:
        parts.append(f"DEMO RUN: accuracy is {NOT_COMPARABLE}; throughput does not depend on it.")
    parts += [_dataset_line(report), _checkpoint_line(report)]
    accuracy = _accuracy_table(report, "simple")
    if accuracy:
        parts += ["", "Accuracy (Market-1501, market1501 protocol)", accuracy]
        parts += _accuracy_notes(report)
    throughput = _throughput_table(report, "simple")
    if throughput:
        parts += ["", "Throughput (images/s)", throughput, *_platform_lines(report)]
    return "\n".join(parts)


def render_markdown(report: Mapping[str, Any]) -> str:
    lines = [
        "# PCB re-ID benchmark report",
        "",
        f"Run `{report['run']}`, {report['timestamp']} on `{report['host']}`.",
        "",
    ]
    if report["demo"]:
        lines += [f"> **Demo run**: accuracy is {NOT_COMPARABLE}.", ""]
    lines += [f"- {_dataset_line(report)}", f"- {_checkpoint_line(report)}"]
    if report["onnx_md5"]:
        lines.append(f"- ONNX md5 {report['onnx_md5']}, opset {report['opset']}")
    accuracy = _accuracy_table(report, "github")
    if accuracy:
        lines += ["", "## Accuracy", "", accuracy, ""]
        lines += [f"- {note}" for note in _accuracy_notes(report)]
    throughput = _throughput_table(report, "github")
    if throughput:
        lines += ["", "## Throughput (images/s)", "", throughput, ""]
        lines += [f"- {line}" for line in _platform_lines(report)]
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in report["versions"].items() if v]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- files


def is_demo(evaluations: list[dict[str, Any]]) -> bool:
    """Accuracy measured on the generated demo dataset is not comparable to the guide's."""
    return any(record.get("synthetic") is True for record in evaluations)


def _read_record(path: Path, stage: str) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise PcbError(f"cannot read {path} ({error}); re-run `pcb {stage}`") from error


def load_inputs(layout: RunLayout, demo: bool | None = None) -> ReportInputs:
    export = None
    if layout.export_record.is_file():
        export = _read_record(layout.export_record, "export")
    evaluations = []
    for path in sorted((layout.root / "eval").glob("*.json")):
        record = _read_record(path, "evaluate")
        missing = [m for m in METRICS if not isinstance(record, dict) or m not in record]
        if missing:
            raise PcbError(f"{path} lacks {', '.join(missing)}; re-run `pcb evaluate`")
        record.setdefault("backend", path.stem)
        evaluations.append(record)
    perf: list[PerfRecord] = []
    for path in sorted((layout.root / "perf").glob("*.json")):
        try:
            perf += read_perf_records(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PcbError(f"cannot read {path} ({error}); re-run `pcb perf`") from error
    if not evaluations and not perf:
        raise PcbError(
            f"nothing to report in {layout.root}: no eval/*.json and no perf/*.json; run "
            "`pcb infer` then `pcb evaluate` for accuracy, and/or `pcb perf` for throughput"
        )
    inference = {}
    for path in sorted((layout.root / "dumps").glob("*/*.json")):
        record = _read_record(path, "infer")
        inference.setdefault(path.parent.name, {})[path.stem] = record
    return ReportInputs(
        export=export,
        evaluations=evaluations,
        perf=perf,
        inference=inference,
        demo=is_demo(evaluations) if demo is None else demo,
    )


def collect_versions(export: Mapping[str, Any] | None) -> dict[str, str | None]:
    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except ImportError:  # the report may run where onnxruntime is not installed
        ort_version = None
    export = export or {}
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort_version,
        "torch (export)": export.get("torch_version"),
        "onnx (export)": export.get("onnx_version"),
        "onnxruntime (export check)": export.get("onnxruntime_version"),
    }


def write_report(layout: RunLayout, demo: bool | None = None) -> dict[str, Any]:
    """Gather every record of the run, write report.json and report.md, print the tables."""
    inputs = load_inputs(layout, demo)
    report = build_report(
        inputs,
        root=layout.root,
        versions=collect_versions(inputs.export),
        host=socket.gethostname(),
        stamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    atomic_write_json(layout.report_json, report)
    atomic_write_text(layout.report_md, render_markdown(report))
    print(render_terminal(report))
    print(f"\nwritten: {layout.report_json} and {layout.report_md}")
    return report
