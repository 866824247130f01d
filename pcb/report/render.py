"""The comparison's JSON rendered for people: terminal tables, Markdown with footnotes, and a
tidy CSV (one row per figure, with its provenance) for spreadsheets.

Pure functions of the comparison dict that `report.build_comparison` returns, so a
comparison.json copied elsewhere renders the same.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from tabulate import tabulate

from .accuracy_table import NOT_COMPARABLE, REFERENCE_BACKEND
from .published import GUIDE_CITATION, PAPER_CITATION, PUBLISHED_SOURCE
from .runs import HOST_ASSUMED, MTIME

GUIDE_NOTE = "guide"
METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "top10": "top-10", "mAP": "mAP"}
GUIDE_METRICS = ("top1", "top5", "top10")
SCOPES = (
    "scope: per process = one CPU process (onnxruntime, its threads); per chip = one NPU chip; "
    "per card = a whole accelerator card (a 310 card holds 4 chips); per gpu = one GPU."
)
DUPLICATE_MARK = "*"
# Before a figure whose repeats spread more than the stability rule allows (pcb/measure/).
UNSTABLE_MARK = "~"
NO_THROUGHPUT = (
    "No throughput measured in these runs: `python -m pcb perf` measures it (the guide's "
    "published figures are in comparison.json)."
)
CSV_FIELDS = (
    "section",
    "column",
    "kind",
    "class",
    "scope",
    "batch_size",
    "metric",
    "value",
    "unit",
    "shown",
    "run",
    "run_path",
    "host",
    "host_assumed",
    "file",
    "tool",
    "tool_version",
    "device",
    "timestamp",
    "note",
)


def _mark(style: str, note: str | None) -> str:
    if note is None:
        return ""
    return f"[^{note}]" if style == "md" else f"[{note}]"


def _format(kind: str, value: float) -> str:
    if kind == "ratio":
        return f"{value:.3f}"
    if kind == "published":
        return f"{value:g}"  # as printed in the guide, no digits added or lost
    return f"{value:.1f}"


def _star(style: str) -> str:
    # Escaped in Markdown, where a leading `*` would open a list or an emphasis.
    return "\\" + DUPLICATE_MARK if style == "md" else DUPLICATE_MARK


def _code(style: str, text: str) -> str:
    return f"`{text}`" if style == "md" else text


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    style: str,
    align: Sequence[str] | None = None,
) -> str:
    """Numbers right-aligned after a left label column, unless `align` says otherwise."""
    if align is None:
        align = ("left",) + ("right",) * (len(headers) - 1)
    return tabulate(
        rows,
        headers=list(headers),
        tablefmt="github" if style == "md" else "simple",
        disable_numparse=True,
        colalign=align,
    )


# ---------------------------------------------------------------- throughput


def _duplicated(comparison: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {
        (platform, batch)
        for platform, entry in comparison["throughput"].items()
        for batch, cell in entry["cells"].items()
        if len(cell["measurements"]) > 1
    }


def throughput_rows(
    comparison: Mapping[str, Any], style: str = "text"
) -> tuple[list[str], list[list[str]]]:
    """The guide's table 7.4 shape: `source` and `scope` rows, a row per batch, `best`."""
    table = comparison["table"]
    columns = table["columns"]
    duplicated = _duplicated(comparison) if table["show"] == "latest" else set()
    headers = ["batch", *(c["header"] for c in columns)]
    source_row, scope_row, timed_row = ["source"], ["scope"], ["timed"]
    for column in columns:
        timed_row.append(column.get("timing") or "")
        ids = {v["source"] for v in column["values"].values()}
        if column["kind"] == "measured":
            source_row.append("measured" + (_mark(style, ids.pop()) if len(ids) == 1 else ""))
        elif column["kind"] == "published":
            source_row.append("published" + _mark(style, GUIDE_NOTE))
        else:
            source_row.append("ratio")
        scope_row.append(f"per {column['scope']}" if column["scope"] else "")
    rows = [source_row, scope_row]
    if any(column.get("timing") for column in columns):
        rows.append(timed_row)
    for batch in table["batches"]:
        row = [str(batch)]
        for column in columns:
            cell = column["values"].get(str(batch))
            if cell is None:
                row.append("-")
                continue
            text = _format(column["kind"], cell["value"])
            if cell.get("stable") is False:
                text = UNSTABLE_MARK + text
            ids = {v["source"] for v in column["values"].values()}
            if column["kind"] == "measured" and len(ids) > 1:
                text += _mark(style, cell["source"])  # a column mixing runs marks every cell
            if (column["key"], str(batch)) in duplicated and column["kind"] == "measured":
                text += _star(style)
            row.append(text)
        rows.append(row)
    best = ["best"]
    for column in columns:
        value, batch = column["best"]["value"], column["best"]["batch_size"]
        text = _format(column["kind"], value)
        best.append(text if batch is None else f"{text} (bs{batch})")
    rows.append(best)
    return headers, rows


def _source_label(style: str, source: Mapping[str, Any]) -> str:
    return f"run {source['run']}{_mark(style, source['id'])}"


def duplicate_notes(
    platform: str, entry: Mapping[str, Any], show: str, style: str = "text"
) -> list[str]:
    """What the table does with a platform's batches that several runs measured: one note per
    run whose figures it shows, naming the figures it leaves out."""
    cells = {b: c for b, c in entry["cells"].items() if len(c["measurements"]) > 1}
    if not cells:
        return []
    if show == "all":
        runs = sorted({m["source"]["run"] for c in cells.values() for m in c["measurements"]})
        return [
            f"{platform} was measured more than once (runs {', '.join(runs)}): one column per "
            "run; its best row and ratio columns use the latest figure of each batch."
        ]
    by_shown: dict[str, dict[str, Any]] = {}
    for batch, cell in cells.items():
        shown = cell["measurements"][cell["shown"]]
        group = by_shown.setdefault(shown["source"]["id"], {"source": shown["source"]})
        group.setdefault("batches", []).append(f"bs{batch}")
        for i, m in enumerate(cell["measurements"]):
            if i != cell["shown"]:
                others = group.setdefault("others", {})
                others.setdefault(m["source"]["id"], (m["source"], []))[1].append(
                    f"{m['images_per_s']:.1f} (bs{batch})"
                )
    notes = []
    for group in by_shown.values():
        source = group["source"]
        others = "; ".join(
            f"{_source_label(style, other)}: {', '.join(values)}"
            for other, values in group["others"].values()
        )
        notes.append(
            f"{_star(style)} {platform} {', '.join(group['batches'])}: measured by several "
            f"runs, never averaged; shown is the latest, from {_source_label(style, source)} "
            f"({source['timestamp']}); not shown: {others}. "
            f"{_code(style, '--show all')} gives each run its own column."
        )
    return notes


def _shown(entry: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {b: c["measurements"][c["shown"]] for b, c in entry["cells"].items()}


def timing_notes(comparison: Mapping[str, Any], style: str = "text") -> list[str]:
    """Per measured column what its clock covered, then which figures are not to be read as
    exact: unstable repeats (marked ~) and runs LoadGen called INVALID."""
    notes = []
    for platform, entry in comparison["throughput"].items():
        if entry.get("timed"):
            notes.append(f"{platform} timed: {entry['timed']}.")
    unstable, invalid = [], []
    for platform, entry in comparison["throughput"].items():
        for batch, m in _shown(entry).items():
            if m.get("stable") is False:
                cv = m.get("cv")
                spread = "" if cv is None else f", CV {100 * cv:.1f} %"
                load = m.get("load_before"), m.get("load_after")
                load_text = (
                    f", load average {load[0][0]:.2f} -> {load[1][0]:.2f}" if all(load) else ""
                )
                repeats = f"{m.get('repeats')} repeats{spread}{load_text}"
                unstable.append(f"{platform} bs{batch} ({repeats})")
            if m.get("loadgen_valid") is False:
                invalid.append(f"{platform} bs{batch}")
    if unstable:
        notes.append(
            f"{UNSTABLE_MARK} unstable, not exact: the repeats of {'; '.join(unstable)} are more "
            "than 10 % apart (largest over smallest, perf_analyzer's rule): other work shared "
            "the machine, or the runs were too short; measure again on a quiet machine."
        )
    if invalid:
        notes.append(
            f"LoadGen called the runs of {', '.join(invalid)} INVALID by its rules (too short or "
            f"too few queries; its logs are under <run>/perf/loadgen/): raise "
            f"{_code(style, '--min-duration')} / {_code(style, '--min-queries')}."
        )
    return notes


def throughput_notes(comparison: Mapping[str, Any], style: str = "text") -> list[str]:
    published = comparison["published"]
    notes = [
        f"{_code(style, 'guide')} columns: {PUBLISHED_SOURCE}; images/s per {published['scope']}"
        f"{_mark(style, GUIDE_NOTE)}.",
        SCOPES,
    ]
    if comparison["ratios"]:
        notes.append(
            "A/B columns: A's images/s over B's at the same batch size; their best row divides "
            "the two best figures, whatever their batch sizes (as the guide's table does)."
        )
        for name, ratio in comparison["ratios"].items():
            top, bottom = ratio["scopes"]
            if top != bottom:
                notes.append(
                    f"{name} divides a per-{top} figure by a per-{bottom} one: not like for like "
                    "where a card holds several chips (an Atlas 300I holds four Ascend 310)."
                )
    else:
        notes.append(
            "No ratio column: the default pairs every measured NPU platform with every measured "
            "GPU platform; choose pairs with --ratios A/B (a published column too: 310P_aoe/T4)."
        )
    notes += timing_notes(comparison, style)
    for platform, entry in comparison["throughput"].items():
        notes += duplicate_notes(platform, entry, comparison["table"]["show"], style)
    if comparison["demo"]:
        notes.append(
            "Demo run: the throughput is real (the PCB network, random input), only its "
            "weights are untrained; the accuracy is not comparable."
        )
    return notes


# ---------------------------------------------------------------- accuracy


def _points(diffs: Mapping[str, float], metrics: Sequence[str]) -> str:
    return " / ".join(f"{diffs[m]:+.2f}" for m in metrics)


def accuracy_rows(
    comparison: Mapping[str, Any], style: str = "text"
) -> tuple[list[str], list[list[str]]]:
    """A row per evaluated backend and run, after the guide's published row."""
    several = len(comparison["runs"]) > 1
    # The column against onnxruntime only where some backend has that reference to differ from.
    referenced = any(e["reference"] for e in comparison["accuracy"].values())
    headers = [
        "backend",
        *(["run"] if several else []),
        "top-1 %",
        "top-5 %",
        "top-10 %",
        "mAP %",
        "vs guide: top-1/5/10 (points)",
        *([f"vs {REFERENCE_BACKEND}: top-1/5/10/mAP (points)"] if referenced else []),
        "verdict",
    ]
    guide = comparison["guide"]
    rows = [
        [
            "guide (published)",
            *(["-"] if several else []),
            *(f"{guide['accuracy'][m] * 100:.1f}" for m in GUIDE_METRICS),
            f"{guide['paper_mAP'] * 100:.1f} (paper)",
            "",
            *([""] if referenced else []),
            "",
        ]
    ]
    for key, entry in comparison["accuracy"].items():
        label = entry["backend"] if several else key
        if entry["demo"]:
            label += " (synthetic)"
        label += _mark(style, entry["source"]["id"])
        diffs = {m: c["diff_points"] for m, c in entry["comparison"].items()}
        reference = entry["reference"]
        if reference is not None:
            verdict = "PASS" if reference["passed"] else "FAIL"
            where = "" if reference["run"] == entry["run"] else f" (run {reference['run']})"
            vs_reference = f"{_points(reference['diff_points'], list(METRIC_LABELS))} {verdict}"
            vs_reference += where
        elif entry["backend"] == REFERENCE_BACKEND:
            vs_reference = "(reference)"
        else:
            vs_reference = "-"
        if entry["passed"] is None:
            verdict = "not comparable (synthetic)"
        else:
            verdict = "PASS" if entry["passed"] else "FAIL"
        rows.append(
            [
                label,
                *([entry["run"]] if several else []),
                *(f"{entry[m] * 100:.2f}" for m in METRIC_LABELS),
                _points(diffs, GUIDE_METRICS),
                *([vs_reference] if referenced else []),
                verdict,
            ]
        )
    return headers, rows


def accuracy_align(headers: Sequence[str]) -> list[str]:
    """Labels and verdicts left, figures right."""
    text = {"backend", "run", "verdict"}
    return ["left" if h in text or h.startswith("vs ") else "right" for h in headers]


def accuracy_notes(comparison: Mapping[str, Any]) -> list[str]:
    tolerance = comparison["guide"]["tolerance"] * 100
    if comparison["demo"]:
        notes = [f"Demo run: accuracy is {NOT_COMPARABLE}; no verdict against the guide."]
    else:
        notes = [
            f"verdict: PASS = top-1/5/10 each at most {tolerance:g} point below the guide's "
            "published value (the guide's criterion: an accuracy drop within 1 %)."
        ]
    if any(e["reference"] for e in comparison["accuracy"].values()):
        notes.append(
            f"vs {REFERENCE_BACKEND}: the difference to the {REFERENCE_BACKEND} evaluation of "
            "the same checkpoint and data (the same run unless named); PASS = every metric "
            f"within {tolerance:g} point. It holds on demo data too: both ran the same weights on "
            "the same images."
        )
    notes.append(
        f"mAP: the guide publishes none; the PCB paper ({PAPER_CITATION}) reports "
        f"{comparison['guide']['paper_mAP'] * 100:.1f} % (rank-1 92.3 %)."
    )
    entries = comparison["accuracy"].values()
    variants = sorted({str(e["ap_variant"]) for e in entries if "ap_variant" in e})
    if variants:
        notes.append(f"AP variant: {', '.join(variants)}.")
    return notes


def parity_rows(comparison: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    entries = [(k, e) for k, e in comparison["accuracy"].items() if e.get("parity")]
    if not entries:
        return None
    keys: list[str] = []
    for _, entry in entries:
        keys += [k for k in entry["parity"] if k not in keys]
    rows = [[key, *(_parity_value(entry["parity"].get(k)) for k in keys)] for key, entry in entries]
    return ["backend", *keys], rows


def _parity_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# ---------------------------------------------------------------- runs and sources


def _dataset_text(run: Mapping[str, Any]) -> str:
    counts = run["counts"]
    if not counts:
        return "- (no evaluation)"
    name = PurePath(str(run["dataset_root"])).name if run["dataset_root"] else "?"
    text = f"{name}: query {counts.get('num_query', '?')}, gallery {counts.get('num_gallery', '?')}"
    return text + (" (synthetic)" if run["demo"] else "")


def run_rows(comparison: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for run in comparison["runs"]:
        host = run["host"] + (" (assumed)" if run["host_source"] != "record" else "")
        checkpoint = "-"
        if run["checkpoint"]:
            name = PurePath(str(run["checkpoint"])).name
            checkpoint = f"{name} (md5 {str(run['checkpoint_md5'])[:8]})"
        rows.append([run["label"], run["path"], host, checkpoint, _dataset_text(run)])
    return ["run", "folder", "host", "checkpoint", "dataset"], rows


RUN_ALIGN = ("left",) * 5


def source_lines(comparison: Mapping[str, Any], style: str = "text") -> list[str]:
    lines = []
    for sid, s in comparison["sources"].items():
        host = f"host {_code(style, s['host'])}"
        if s["host_source"] == HOST_ASSUMED:
            host += " (assumed: the report's host; the records name none)"
        when = s["timestamp"] + (" (file time)" if s["timestamp_source"] == MTIME else "")
        tool = f"{s['tool']} {s['tool_version']}".strip()
        where = f"run {_code(style, s['run'])} ({_code(style, s['path'])})"
        text = f"{where}, {_code(style, s['file'])}, {host}, {tool}, {when}"
        lines.append(f"[^{sid}]: {text}" if style == "md" else f"[{sid}] {text}")
    columns = comparison["published"]["columns"]
    described = "; ".join(
        f"{name}: {c['device']}, {c['tool']}" + (f", {c['note']}" if c["note"] else "")
        for name, c in columns.items()
    )
    text = (
        f"the guide's table 7.4 ({GUIDE_CITATION}), "
        f"{PUBLISHED_SOURCE}; images/s per card. {described}."
    )
    lines.append(f"[^{GUIDE_NOTE}]: {text}" if style == "md" else f"[{GUIDE_NOTE}] {text}")
    return lines


# ---------------------------------------------------------------- whole documents


def _heading(comparison: Mapping[str, Any]) -> str:
    n = len(comparison["runs"])
    runs = f"{n} run{'s' if n != 1 else ''}"
    return f"{runs}, generated {comparison['timestamp']} on {comparison['host']}"


def render_terminal(comparison: Mapping[str, Any]) -> str:
    parts = [f"PCB re-ID comparison: {_heading(comparison)}"]
    if comparison["demo"]:
        parts.append(f"DEMO RUN: accuracy is {NOT_COMPARABLE}; throughput does not depend on it.")
    parts += ["", _table(*run_rows(comparison), "text", RUN_ALIGN)]
    parts += [f"note: {note}" for note in comparison.get("notes", [])]
    if comparison["throughput"]:
        parts += ["", "Throughput (images/s)", _table(*throughput_rows(comparison), "text")]
        parts += throughput_notes(comparison)
    else:
        parts += ["", NO_THROUGHPUT]
    if comparison["accuracy"]:
        parts += ["", "Accuracy (Market-1501, market1501 protocol)"]
        headers, rows = accuracy_rows(comparison)
        parts += [_table(headers, rows, "text", accuracy_align(headers))]
        parts += accuracy_notes(comparison)
    parity = parity_rows(comparison)
    if parity:
        parts += ["", "Feature parity", _table(*parity, "text")]
    parts += ["", "Sources", *source_lines(comparison)]
    return "\n".join(parts)


def render_markdown(comparison: Mapping[str, Any], images: Sequence[str] = ()) -> str:
    title = "PCB re-ID comparison report"
    lines = [f"# {title}", "", f"{_heading(comparison)} by `python -m pcb report`.", ""]
    if comparison["demo"]:
        lines += [
            "> **Demo run** (synthetic data, untrained weights): the accuracy is not comparable "
            "to the guide's; the throughput is the network's real speed on random input.",
            "",
        ]
    lines += [f"> **Warning**: {w}" for w in comparison["warnings"]]
    # A comparison.json written before run notes existed has none.
    lines += [f"> **Note**: {n}" for n in comparison.get("notes", [])]
    if comparison["warnings"] or comparison.get("notes"):
        lines.append("")
    lines += ["## Runs", "", _table(*run_rows(comparison), "md", RUN_ALIGN), ""]
    lines += ["## Throughput (images/s)", ""]
    if comparison["throughput"]:
        lines += [_table(*throughput_rows(comparison, "md"), "md"), ""]
        lines += [f"- {note}" for note in throughput_notes(comparison, "md")]
    else:
        lines.append(NO_THROUGHPUT)
    if "throughput.png" in images:
        lines += ["", "![Throughput versus batch size](throughput.png)"]
    if comparison["accuracy"]:
        lines += ["", "## Accuracy (Market-1501, market1501 protocol)", ""]
        headers, rows = accuracy_rows(comparison, "md")
        lines += [_table(headers, rows, "md", accuracy_align(headers)), ""]
        lines += [f"- {note}" for note in accuracy_notes(comparison)]
        if "cmc.png" in images:
            lines += ["", "![CMC curve, rank 1 to 50](cmc.png)"]
    ranked = sorted(name for name in images if name.startswith("ranked_"))
    if ranked:
        lines += ["", "## Ranked results", ""]
        lines.append(
            "Chosen queries (the best and worst by AP, and two drawn with a fixed seed), each "
            "beside its top-10 gallery images: green frame a true match, red a false one."
        )
        for name in ranked:
            backend = name[len("ranked_") : -len(".png")]
            lines += ["", f"![Ranked results of {backend}]({name})"]
    parity = parity_rows(comparison)
    if parity:
        lines += ["", "## Feature parity", "", _table(*parity, "md")]
    lines += ["", "## Versions", ""]
    report_versions = ", ".join(f"{k} {v}" for k, v in comparison["versions"].items() if v)
    lines.append(f"- report ({comparison['host']}): {report_versions}")
    for run in comparison["runs"]:
        export = ", ".join(f"{k} {v}" for k, v in run["export_versions"].items() if v)
        if export:
            lines.append(f"- export of run `{run['label']}`: {export}")
    lines += ["", "## Sources", ""]
    lines += source_lines(comparison, "md")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CSV


def _source_fields(source: Mapping[str, Any] | None) -> dict[str, Any]:
    if not source:
        return {}
    return {
        "run": source["run"],
        "run_path": source["path"],
        "host": source["host"],
        "host_assumed": source["host_source"] != "record",
        "file": source["file"],
        "tool": source["tool"],
        "tool_version": source["tool_version"],
        "timestamp": source["timestamp"],
    }


def _shown_source(entry: Mapping[str, Any], batch: int) -> Mapping[str, Any]:
    cell = entry["cells"][str(batch)]
    return cell["measurements"][cell["shown"]]["source"]


def csv_rows(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: every measurement (shown or not), published value, ratio, metric."""
    rows: list[dict[str, Any]] = []
    for platform, entry in comparison["throughput"].items():
        for batch, cell in entry["cells"].items():
            for i, m in enumerate(cell["measurements"]):
                rows.append(
                    {
                        "section": "throughput",
                        "column": platform,
                        "kind": "measured",
                        "class": entry["class"],
                        "scope": m["scope"],
                        "batch_size": batch,
                        "metric": "images_per_s",
                        "value": m["images_per_s"],
                        "unit": "images/s",
                        "shown": i == cell["shown"],
                        "device": m["device"],
                        **_source_fields(m["source"]),
                    }
                )
        best = entry["best"]
        rows.append(
            {
                "section": "throughput",
                "column": platform,
                "kind": "measured",
                "class": entry["class"],
                "scope": entry["scope"],
                "batch_size": best["batch_size"],
                "metric": "best_images_per_s",
                "value": best["images_per_s"],
                "unit": "images/s",
                "shown": True,
                "device": entry["device"],
                **_source_fields(_shown_source(entry, best["batch_size"])),
            }
        )
    published = comparison["published"]
    for name, column in published["columns"].items():
        best = column["best"]
        values = [*column["images_per_s"].items(), (str(best["batch_size"]), None)]
        for batch, value in values:
            rows.append(
                {
                    "section": "throughput",
                    "column": name,
                    "kind": "published",
                    "class": column["class"],
                    "scope": published["scope"],
                    "batch_size": batch,
                    "metric": "images_per_s" if value is not None else "best_images_per_s",
                    "value": value if value is not None else best["images_per_s"],
                    "unit": "images/s",
                    "device": column["device"],
                    "tool": column["tool"],
                    "note": published["source"],
                }
            )
    for name, ratio in comparison["ratios"].items():
        for batch, value in [*ratio["by_batch"].items(), ("best", ratio["best"])]:
            rows.append(
                {
                    "section": "throughput",
                    "column": name,
                    "kind": "ratio",
                    "batch_size": batch,
                    "metric": "ratio",
                    "value": value,
                    "unit": "x",
                }
            )
    for key, entry in comparison["accuracy"].items():
        base = {"section": "accuracy", "column": key, "kind": "measured"}
        base.update(_source_fields(entry["source"]), note="synthetic" if entry["demo"] else "")
        for metric in METRIC_LABELS:
            rows.append({**base, "metric": metric, "value": entry[metric] * 100, "unit": "%"})
        for metric, c in entry["comparison"].items():
            rows.append(
                {**base, "metric": f"{metric} - guide", "value": c["diff_points"], "unit": "points"}
            )
        if entry["reference"]:
            for metric, diff in entry["reference"]["diff_points"].items():
                name = f"{metric} - {entry['reference']['key']}"
                rows.append({**base, "metric": name, "value": diff, "unit": "points"})
        for metric, value in (entry["parity"] or {}).items():
            rows.append({**base, "metric": f"parity {metric}", "value": value, "unit": ""})
    return rows


def render_csv(comparison: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(comparison):
        writer.writerow(row)
    return buffer.getvalue()
