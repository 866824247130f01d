"""The report's two figures as PNG: throughput versus batch size, and the CMC curve.

matplotlib is optional (the `plots` extra): it is imported only here, only when a plot is
drawn, and its Agg canvas is used directly so no GUI backend or global pyplot state is touched.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_bytes

DEMO_SUBTITLE = "demo: synthetic data, untrained weights"
MAX_RANK = 50
# A y range wider than this many times is drawn on a log axis, so a CPU at 30 images/s and a
# card at 2,000 both stay readable.
LOG_Y_SPAN = 20.0
MEASURED_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink")
PUBLISHED_COLOURS = ("tab:orange", "tab:olive", "tab:cyan", "tab:gray")


class PlotsUnavailable(Exception):
    """matplotlib cannot be imported; the report goes on without figures."""


def _figure(size: tuple[float, float]) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise PlotsUnavailable(
            f"matplotlib is not installed ({error}); `pip install matplotlib` (or the package's "
            "`plots` extra) and run the report again"
        ) from error
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    atomic_write_bytes(path, buffer.getvalue())


def _title(text: str, demo: bool) -> str:
    return f"{text}\n({DEMO_SUBTITLE})" if demo else text


def _plot_column(axes: Any, column: Mapping[str, Any], **style: Any) -> tuple[float, ...]:
    """One column's images/s against its batch sizes; returns the values drawn."""
    points = sorted((int(b), v["value"]) for b, v in column["values"].items())
    xs, ys = zip(*points)
    axes.plot(xs, ys, **style)
    return ys


def plot_throughput(comparison: Mapping[str, Any], path: Path) -> bool:
    """Measured platforms solid, the guide's published columns dashed; False: nothing measured."""
    columns = comparison["table"]["columns"]
    measured = [c for c in columns if c["kind"] == "measured"]
    if not measured:
        return False
    published = [c for c in columns if c["kind"] == "published"]
    figure = _figure((9.0, 6.5))
    axes = figure.add_subplot()
    values: list[float] = []
    for i, column in enumerate(measured):
        values += _plot_column(
            axes,
            column,
            marker="o",
            linewidth=2.2,
            color=MEASURED_COLOURS[i % len(MEASURED_COLOURS)],
            label=f"{column['header']}: measured, per {column['scope']}",
        )
    for i, column in enumerate(published):
        values += _plot_column(
            axes,
            column,
            linestyle="--",
            marker=".",
            linewidth=1.4,
            color=PUBLISHED_COLOURS[i % len(PUBLISHED_COLOURS)],
            label=f"{column['key']}: published (guide 7.4), per card",
        )
    batches = sorted({int(b) for c in [*measured, *published] for b in c["values"]})
    axes.set_xscale("log", base=2)
    axes.set_xticks(batches)
    axes.set_xticklabels([str(b) for b in batches])
    axes.set_xlabel("batch size (log2 scale)")
    log_y = min(values) > 0 and max(values) / min(values) > LOG_Y_SPAN
    if log_y:
        from matplotlib.ticker import FuncFormatter, LogLocator

        axes.set_yscale("log")
        # 10, 20, 50, 100, ... in plain numbers: 1e3 means little on a slide.
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes.minorticks_off()
    axes.set_ylabel("throughput, images/s" + (" (log scale)" if log_y else ""))
    axes.set_title(_title("PCB re-ID throughput versus batch size", comparison["demo"]))
    axes.grid(True, which="major", alpha=0.3)
    # Below the axes, so long platform names never squeeze the plot itself.
    figure.legend(loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    _save(figure, path)
    return True


def plot_cmc(comparison: Mapping[str, Any], path: Path) -> bool:
    """CMC rank 1..50 per evaluated backend and run, with the guide's published ranks marked;
    False: no evaluation holds a CMC."""
    entries = [(k, e) for k, e in comparison["accuracy"].items() if e.get("cmc")]
    if not entries:
        return False
    figure = _figure((8.0, 5.0))
    axes = figure.add_subplot()
    lowest = 100.0
    for i, (key, entry) in enumerate(entries):
        curve = [100.0 * v for v in entry["cmc"][:MAX_RANK]]
        lowest = min(lowest, min(curve))
        label = f"{key}: top-1 {100 * entry['top1']:.1f} %, mAP {100 * entry['mAP']:.1f} %"
        axes.plot(
            range(1, len(curve) + 1),
            curve,
            linewidth=2.0,
            color=MEASURED_COLOURS[i % len(MEASURED_COLOURS)],
            label=label + (" (synthetic)" if entry["demo"] else ""),
        )
    guide = comparison["guide"]["accuracy"]
    ranks = [int(m[3:]) for m in guide]
    published = [100.0 * guide[m] for m in guide]
    lowest = min(lowest, *published)
    axes.plot(
        ranks,
        published,
        linestyle="none",
        marker="X",
        markersize=9,
        color="black",
        label="guide, published: top-1/5/10 (PCB_3_7.pt, Market-1501)",
    )
    axes.set_xlim(0.5, MAX_RANK + 0.5)
    axes.set_ylim(max(0.0, lowest - 5.0), 100.5)
    axes.set_xticks([1, 5, 10, 20, 30, 40, 50])
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate, % of queries")
    axes.set_title(_title("PCB re-ID CMC curve (Market-1501 protocol)", comparison["demo"]))
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    _save(figure, path)
    return True
