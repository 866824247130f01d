"""The guide's table 7.4 from measurements: a row per batch size and a `best` row, a column per
platform, ratio columns, and the guide's published columns as reference.

Pure functions of the loaded runs; the result is the JSON the report writes, and every
renderer (terminal, Markdown, CSV, plots) reads only that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..errors import PcbError
from ..perf import timing_label, timing_of
from .published import GUIDE_COLUMNS, GUIDE_SCOPE, GUIDE_THROUGHPUT, PUBLISHED_SOURCE
from .runs import Measurement, RunRecords, Source, SourceIndex

SHOW_CHOICES = ("latest", "all")
# What each tool or backend runs on; the default ratio columns put every NPU over every GPU,
# as the guide's 310P_aoe/T4 does.
PLATFORM_CLASSES = {
    "ais_bench": "NPU",
    "ais-bench": "NPU",
    "benchmark": "NPU",
    "trtexec": "GPU",
    "tensorrt": "GPU",
    "onnxruntime": "CPU",
}
CLASS_ORDER = ("NPU", "GPU", "CPU", "other")
PUBLISHED_PREFIX = "guide "


# A backend that runs where it finds a device (torch: a CUDA GPU, else the CPU) says so in its
# records' scope.
SCOPE_CLASSES = {"gpu": "GPU", "chip": "NPU", "card": "NPU", "process": "CPU"}


def platform_class(backend: str, tool: str, scope: str = "") -> str:
    for name in (tool, backend):
        found = PLATFORM_CLASSES.get(name.strip().lower())
        if found:
            return found
    return SCOPE_CLASSES.get(scope, "other")


def best_throughput(by_batch: Mapping[int, float]) -> tuple[int, float]:
    """(batch size, images/s) of the fastest batch; the smaller batch wins a tie."""
    batch = max(sorted(by_batch), key=lambda b: by_batch[b])
    return batch, by_batch[batch]


def _when(source: Source) -> datetime:
    text = source.timestamp
    try:
        # Python 3.9's parser takes no `Z`; other tools write one for UTC.
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    # A stamp without a zone is taken as UTC, so it sorts against zoned ones at all.
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _measurements(runs: Sequence[RunRecords]) -> list[tuple[int, Measurement]]:
    """Every measurement with its position, which breaks timestamp ties (the later run wins)."""
    ordered = [m for run in runs for m in run.measurements]
    return list(enumerate(ordered))


def merge_measurements(
    runs: Sequence[RunRecords],
) -> dict[str, dict[int, list[Measurement]]]:
    """platform -> batch -> every measurement of it, oldest first (the last one is `latest`).

    Nothing is averaged: two runs timing the same platform and batch both stay, and the
    report says which one it shows.
    """
    merged: dict[str, dict[int, list[tuple[int, Measurement]]]] = {}
    for order, m in _measurements(runs):
        merged.setdefault(m.record.platform, {}).setdefault(m.record.batch_size, []).append(
            (order, m)
        )
    return {
        platform: {
            batch: [m for _, m in sorted(found, key=lambda om: (_when(om[1].source), om[0]))]
            for batch, found in sorted(by_batch.items())
        }
        for platform, by_batch in merged.items()
    }


def _measurement_dict(m: Measurement, sources: SourceIndex) -> dict[str, Any]:
    r = m.record
    return {
        "images_per_s": r.images_per_s,
        "latency": r.to_dict()["latency"],
        "iterations": r.iterations,
        "device": r.device,
        "scope": r.scope,
        "tool": r.tool,
        "tool_version": r.tool_version,
        "extra": r.extra,
        "source": sources.entry(m.source),
        # How far the figure can be trusted, and what its clock covered (pcb/measure/).
        "timed": timing_of(r)[0],
        "timer": timing_of(r)[1],
        "timing": timing_label(r),
        "stable": r.stable,
        "cv": r.cv,
        "repeats": r.repeats,
        "loadgen_valid": r.loadgen_valid,
        "load_before": r.load_before,
        "load_after": r.load_after,
    }


def platform_entries(
    merged: Mapping[str, Mapping[int, Sequence[Measurement]]], sources: SourceIndex
) -> dict[str, dict[str, Any]]:
    """The JSON `throughput` section: per platform the shown (latest) figures and all others."""
    entries = {}
    for platform, by_batch in merged.items():
        latest = {b: found[-1] for b, found in by_batch.items()}
        shown = {b: m.record.images_per_s for b, m in latest.items()}
        newest = max(latest.values(), key=lambda m: _when(m.source)).record
        entries[platform] = {
            "class": platform_class(newest.backend, newest.tool, newest.scope),
            "backend": newest.backend,
            "tool": newest.tool,
            "tool_version": newest.tool_version,
            "device": newest.device,
            "scope": newest.scope,
            "timed": timing_of(newest)[0],
            "timing": timing_label(newest),
            **_per_batch_and_best(shown),
            "cells": {
                str(b): {
                    "shown": len(found) - 1,
                    "measurements": [_measurement_dict(m, sources) for m in found],
                }
                for b, found in by_batch.items()
            },
        }
    return entries


def _per_batch_and_best(images_per_s: dict[int, float]) -> dict[str, Any]:
    batch, value = best_throughput(images_per_s)
    return {
        "images_per_s": {str(b): v for b, v in images_per_s.items()},
        "best": {"batch_size": batch, "images_per_s": value},
    }


def published_section() -> dict[str, Any]:
    columns = {}
    for column in GUIDE_COLUMNS:
        columns[column.name] = {
            "device": column.device,
            "tool": column.tool,
            "class": column.platform_class,
            "note": column.note,
            **_per_batch_and_best(GUIDE_THROUGHPUT[column.name]),
        }
    return {"source": PUBLISHED_SOURCE, "scope": GUIDE_SCOPE, "columns": columns}


# ---------------------------------------------------------------- ratio columns


def default_ratios(throughput: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Every measured NPU platform over every measured GPU platform."""
    npus = [p for p, e in throughput.items() if e["class"] == "NPU"]
    gpus = [p for p, e in throughput.items() if e["class"] == "GPU"]
    return [(n, g) for n in npus for g in gpus]


def parse_ratios(text: str) -> list[tuple[str, str]]:
    """'A/B,C/D' -> [(A, B), (C, D)]."""
    pairs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        names = [n.strip() for n in part.split("/")]
        if len(names) != 2 or not all(names):
            raise PcbError(
                f"ratio {part!r} is not NUMERATOR/DENOMINATOR: give platform names such as "
                "Ascend310P3-aoe/T4-trt-fp16 (or a published column: 310P_aoe/T4)"
            )
        pairs.append((names[0], names[1]))
    if not pairs:
        raise PcbError("--ratios is empty: give pairs such as Ascend310P3/T4-trt-fp16")
    return pairs


def _operand(
    name: str, throughput: Mapping[str, Mapping[str, Any]], published: Mapping[str, Any]
) -> tuple[str, Mapping[str, Any], str]:
    """(column header, entry, scope) of a measured platform or, failing that, a published one."""
    if name in throughput:
        return name, throughput[name], throughput[name]["scope"]
    bare = name[len(PUBLISHED_PREFIX) :] if name.startswith(PUBLISHED_PREFIX) else name
    if bare in published["columns"]:
        return PUBLISHED_PREFIX + bare, published["columns"][bare], published["scope"]
    known = [*throughput, *published["columns"]]
    raise PcbError(
        f"--ratios names {name!r}, which is no column of this report; columns: {', '.join(known)}"
    )


def ratio_section(
    pairs: Sequence[tuple[str, str]],
    throughput: Mapping[str, Mapping[str, Any]],
    published: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Per pair, numerator / denominator at each batch both measured, and best over best (the
    guide's last row divides the two best figures, whatever their batch sizes)."""
    ratios = {}
    for top_name, bottom_name in pairs:
        top_header, top, top_scope = _operand(top_name, throughput, published)
        bottom_header, bottom, bottom_scope = _operand(bottom_name, throughput, published)
        top_values, bottom_values = top["images_per_s"], bottom["images_per_s"]
        by_batch = {
            b: top_values[b] / bottom_values[b]
            for b in sorted(set(top_values) & set(bottom_values), key=int)
        }
        ratios[f"{top_header}/{bottom_header}"] = {
            "numerator": top_header,
            "denominator": bottom_header,
            "scopes": [top_scope, bottom_scope],
            "by_batch": by_batch,
            "best": top["best"]["images_per_s"] / bottom["best"]["images_per_s"],
        }
    return ratios


# ---------------------------------------------------------------- the table


def _class_rank(entry: Mapping[str, Any]) -> int:
    cls = entry.get("class", "other")
    return CLASS_ORDER.index(cls) if cls in CLASS_ORDER else len(CLASS_ORDER)


def _measured_columns(throughput: Mapping[str, Mapping[str, Any]], show: str) -> list[dict]:
    columns = []
    for platform in sorted(throughput, key=lambda p: _class_rank(throughput[p])):
        entry = throughput[platform]
        base = {"kind": "measured", "key": platform, "scope": entry["scope"]}
        # Reports written before the timing fields existed have none.
        base["timing"] = entry.get("timing", "")
        base["class"] = entry["class"]
        # Under --show all a platform timed by several runs gets one column per run and file.
        by_source: dict[str, dict[str, dict[str, Any]]] = {}
        for batch, cell in entry["cells"].items():
            found = cell["measurements"]
            for m in found if show == "all" else [found[cell["shown"]]]:
                src = m["source"]
                key = "latest" if show != "all" else f"{src['run']}|{src['file']}"
                by_source.setdefault(key, {})[batch] = {
                    "value": m["images_per_s"],
                    "source": src["id"],
                    "scope": m["scope"],
                    "stable": m.get("stable"),
                    "loadgen_valid": m.get("loadgen_valid"),
                }
        runs = [key.split("|")[0] for key in by_source]
        for key, values in by_source.items():
            header = platform
            if len(by_source) > 1:
                run = key.split("|")[0]
                # The run names the column; its file too when one run timed it twice.
                header = f"{platform} @ {run}" if runs.count(run) == 1 else f"{platform} @ {key}"
            batch, value = best_throughput({int(b): v["value"] for b, v in values.items()})
            columns.append(
                {
                    **base,
                    "header": header,
                    "values": values,
                    "best": {"batch_size": batch, "value": value},
                }
            )
    return columns


def _ratio_columns(ratios: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    return [
        {
            "kind": "ratio",
            "key": name,
            "header": name,
            "scope": "",
            "class": "",
            "values": {b: {"value": v, "source": None} for b, v in r["by_batch"].items()},
            "best": {"batch_size": None, "value": r["best"]},
        }
        for name, r in ratios.items()
    ]


def _published_columns(published: Mapping[str, Any]) -> list[dict]:
    return [
        {
            "kind": "published",
            "key": name,
            "header": PUBLISHED_PREFIX + name,
            "scope": published["scope"],
            "class": column["class"],
            "values": {b: {"value": v, "source": None} for b, v in column["images_per_s"].items()},
            "best": {
                "batch_size": column["best"]["batch_size"],
                "value": column["best"]["images_per_s"],
            },
        }
        for name, column in published["columns"].items()
    ]


def table_section(
    throughput: Mapping[str, Mapping[str, Any]],
    ratios: Mapping[str, Mapping[str, Any]],
    published: Mapping[str, Any] | None,
    show: str,
) -> dict[str, Any]:
    """The columns in display order: measured (NPU, GPU, CPU), ratios, then published."""
    if show not in SHOW_CHOICES:
        raise PcbError(f"--show {show!r} is not one of {', '.join(SHOW_CHOICES)}")
    columns = _measured_columns(throughput, show) + _ratio_columns(ratios)
    if published is not None:
        columns += _published_columns(published)
    # Every batch size any column has: a published column stays whole beside a partial run.
    batches = {int(b) for c in columns for b in c["values"]}
    return {"show": show, "batches": sorted(batches), "columns": columns}
