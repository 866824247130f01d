"""One or more run folders -> one comparison: terminal tables, comparison.{md,csv,json}, PNGs.

The guide's end product is its table 7.4 (throughput per batch size per platform, with ratio
columns and the best batch) next to an accuracy check. Runs made on different hosts (the NPU
and the GPU rarely share a machine) are merged here, each figure keeping its provenance.

Building the comparison is pure (`build_comparison`); reading runs and writing files happen in
`write_comparison` only. A single run's report is the same comparison, written into the run
folder, plus report.json / report.md under the names RunLayout gives them.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ..constants import GUIDE_ACCURACY, GUIDE_TOLERANCE
from ..errors import PcbError
from ..fileio import atomic_write_json, atomic_write_text
from ..layout import DEFAULT_COMPARISON_DIR, RunLayout
from .accuracy_table import NOT_COMPARABLE, accuracy_section
from .consistency import Consistency, check_runs, require_comparable
from .published import PAPER_MAP
from .render import render_csv, render_markdown, render_terminal
from .runs import RunRecords, SourceIndex, load_runs
from .throughput_table import (
    SHOW_CHOICES,
    default_ratios,
    merge_measurements,
    parse_ratios,
    platform_entries,
    published_section,
    ratio_section,
    table_section,
)

OUTPUT_NAMES = ("comparison.json", "comparison.md", "comparison.csv")
PLOT_NAMES = ("throughput.png", "cmc.png")
# The report host's packages worth naming, each with the distributions that provide it.
REPORT_PACKAGES = {
    "numpy": ("numpy",),
    "tabulate": ("tabulate",),
    "matplotlib": ("matplotlib",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
}

__all__ = ["NOT_COMPARABLE", "build_comparison", "write_comparison", "write_report"]


def _run_entry(run: RunRecords) -> dict[str, Any]:
    export = run.export or {}
    first = run.evaluations[0].record if run.evaluations else {}
    return {
        "label": run.label,
        "path": str(run.root),
        "host": run.host,
        "host_source": run.host_source,
        "demo": run.demo,
        "dataset_root": first.get("dataset_root"),
        "counts": {
            k: first[k]
            for k in ("num_query", "num_gallery", "num_gallery_ids", "num_valid_queries")
            if k in first
        },
        "checkpoint": export.get("checkpoint"),
        "checkpoint_md5": export.get("checkpoint_md5"),
        "onnx_md5": export.get("onnx_md5"),
        "opset": export.get("opset"),
        "export_max_abs_diff": export.get("max_abs_diff"),
        "export_versions": {
            "torch": export.get("torch_version"),
            "onnx": export.get("onnx_version"),
            "onnxruntime": export.get("onnxruntime_version"),
            "python": export.get("python_version"),
        },
        "backends": sorted(
            {e.backend for e in run.evaluations} | {m.record.backend for m in run.measurements}
        ),
        "inference": run.inference,
        "manifest": run.manifest,
        "skipped_images": run.skipped_images,
        "notes": list(run.notes),
    }


def run_notes(runs: Sequence[RunRecords]) -> list[str]:
    """What a reader must know about the runs' records: figures left out because no complete
    stage vouches for them, images preprocessing skipped, a run without a manifest."""
    several = len(runs) > 1
    return [f"run {run.label}: {note}" if several else note for run in runs for note in run.notes]


def report_versions() -> dict[str, str | None]:
    """The report host's libraries; each run's export versions are in its `runs` entry."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    # Read from the installed metadata: importing matplotlib only to name its version would
    # cost a second on every report, plots or not.
    for name, distributions in REPORT_PACKAGES.items():
        versions[name] = None
        for distribution in distributions:
            try:
                versions[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:  # optional: the report runs without it
                continue
    return versions


def build_comparison(
    runs: Sequence[RunRecords],
    consistency: Consistency,
    warnings: Sequence[str],
    show: str = "latest",
    ratios: Sequence[tuple[str, str]] | None = None,
    host: str = "",
    stamp: str = "",
    versions: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """The whole comparison as JSON-ready data; every renderer and plot reads only this."""
    sources = SourceIndex()
    # Footnotes numbered run by run, in the order the runs were given.
    for run in runs:
        for item in [*run.measurements, *run.evaluations]:
            sources.id(item.source)
    throughput = platform_entries(merge_measurements(runs), sources)
    accuracy = accuracy_section(runs, sources)
    published = published_section()
    pairs = default_ratios(throughput) if ratios is None else list(ratios)
    ratio_columns = ratio_section(pairs, throughput, published)
    single = runs[0] if len(runs) == 1 else None
    dataset = consistency.dataset
    return {
        "schema": 1,
        "demo": any(run.demo for run in runs),
        "runs": [_run_entry(run) for run in runs],
        "run": str(single.root) if single else None,
        "checkpoint_md5": consistency.checkpoint_md5,
        "dataset": None if dataset is None else dataset.describe(),
        "warnings": list(warnings),
        "notes": run_notes(runs),
        "guide": {
            "accuracy": dict(GUIDE_ACCURACY),
            "tolerance": GUIDE_TOLERANCE,
            "paper_mAP": PAPER_MAP,
        },
        "accuracy": accuracy,
        "throughput": throughput,
        "ratios": ratio_columns,
        "published": published,
        "table": table_section(throughput, ratio_columns, published, show),
        "sources": sources.to_dict(),
        "versions": dict(versions or {}),
        "host": host,
        "timestamp": stamp,
    }


def _remove_stale(path: Path) -> None:
    # A plot left from an earlier report would silently contradict this one.
    if path.is_file():
        path.unlink()


def write_plots(comparison: Mapping[str, Any], out: Path) -> list[Path]:
    """throughput.png and cmc.png, or a printed note when matplotlib is missing."""
    from .plots import PlotsUnavailable, plot_cmc, plot_throughput

    written = []
    try:
        for name, plot in zip(PLOT_NAMES, (plot_throughput, plot_cmc)):
            path = out / name
            if plot(comparison, path):
                written.append(path)
            else:
                _remove_stale(path)
    except PlotsUnavailable as missing:
        for name in PLOT_NAMES:
            _remove_stale(out / name)
        print(f"note: plots skipped: {missing}")
        return []
    return written


def write_comparison(
    run_dirs: Sequence[Path],
    out: Path | None = None,
    show: str = "latest",
    ratios: str | Sequence[tuple[str, str]] | None = None,
    force: bool = False,
    demo: bool | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Read the runs, check they are comparable, write the comparison files, print the tables.

    `out` defaults to the run folder for one run and to results/comparison for several.
    `ratios` is None for the default pairs (every NPU over every GPU), or 'A/B,C/D'.
    """
    if not run_dirs:
        raise ValueError("write_comparison needs at least one run folder")
    if show not in SHOW_CHOICES:
        raise PcbError(f"--show {show!r} is not one of {', '.join(SHOW_CHOICES)}")
    pairs = parse_ratios(ratios) if isinstance(ratios, str) else ratios
    runs = load_runs([Path(r) for r in run_dirs], demo)
    consistency = check_runs(runs)
    warnings = require_comparable(consistency, force)
    comparison = build_comparison(
        runs,
        consistency,
        warnings,
        show=show,
        ratios=pairs,
        host=socket.gethostname(),
        stamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=report_versions(),
    )
    if out is None:
        out = Path(run_dirs[0]) if len(run_dirs) == 1 else DEFAULT_COMPARISON_DIR
    out = Path(out)
    images = write_plots(comparison, out) if plots else []
    markdown = render_markdown(comparison, [p.name for p in images])
    json_path, md_path, csv_path = (out / name for name in OUTPUT_NAMES)
    atomic_write_json(json_path, comparison)
    atomic_write_text(md_path, markdown)
    atomic_write_text(csv_path, render_csv(comparison))
    written = [json_path, md_path, csv_path, *images]
    if len(runs) == 1 and out.resolve() == Path(run_dirs[0]).resolve():
        # The run folder's own names (RunLayout.report_*), read by the pipeline and its users.
        layout = RunLayout(Path(run_dirs[0]))
        atomic_write_json(layout.report_json, comparison)
        atomic_write_text(layout.report_md, markdown)
        written += [layout.report_json, layout.report_md]
    for warning in warnings:
        print(f"warning: {warning}")
    print(render_terminal(comparison))
    print("\nwritten: " + ", ".join(str(p) for p in written))
    return comparison


def write_report(
    layout: RunLayout,
    demo: bool | None = None,
    show: str = "latest",
    ratios: str | Sequence[tuple[str, str]] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """One run's report, written into its folder (comparison.* and report.json / report.md)."""
    return write_comparison(
        [layout.root], out=layout.root, show=show, ratios=ratios, demo=demo, plots=plots
    )
