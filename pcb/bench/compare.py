"""`invoke bench --compare OLD.json`: every figure of a run beside an earlier run's, as ratios.

Figures are matched by benchmark and name. A figure whose target was met before and is not
now is a regression; the rest is shown as new / old so a drift shows before it breaks a
target. Both runs' machines and loads are printed: a ratio between two machines, or between
a quiet and a busy one, measures the machines as much as the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..errors import PcbError
from ..fileio import read_json


def read_bench(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PcbError(f"benchmark record not found: {path}; give a results/bench/<date>.json")
    try:
        payload = read_json(path)
    except (OSError, ValueError) as error:
        raise PcbError(f"{path} is not a benchmark record ({error})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("benchmarks"), list):
        raise PcbError(
            f"{path} is not a benchmark record (no 'benchmarks' list): give a JSON that "
            "`invoke bench` wrote"
        )
    return payload


def _figures(payload: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for bench in payload["benchmarks"]:
        for figure in bench.get("figures") or []:
            found[(str(bench.get("name")), str(figure.get("name")))] = figure
    return found


def compare(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure in either run: both values, new / old, and what changed."""
    before, after = _figures(old), _figures(new)
    rows = []
    for key in list(after) + [k for k in before if k not in after]:
        was, now = before.get(key), after.get(key)
        old_value = was.get("value") if was else None
        new_value = now.get("value") if now else None
        ratio = None
        if isinstance(old_value, (int, float)) and isinstance(new_value, (int, float)):
            ratio = new_value / old_value if old_value else None
        if was is None:
            status = "new figure"
        elif now is None:
            status = "gone"
        elif was.get("met") is True and now.get("met") is False:
            status = "REGRESSED"
        elif was.get("met") is False and now.get("met") is True:
            status = "now met"
        else:
            status = ""
        rows.append(
            {
                "benchmark": key[0],
                "figure": key[1],
                "old": old_value,
                "new": new_value,
                "ratio": ratio,
                "target": (now or was or {}).get("target", ""),
                "status": status,
            }
        )
    return rows


def _number(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.4g}"


def render(rows: Sequence[dict[str, Any]], new: dict[str, Any], old: dict[str, Any]) -> str:
    table = tabulate(
        [
            [
                r["benchmark"],
                r["figure"],
                _number(r["old"]),
                _number(r["new"]),
                "-" if r["ratio"] is None else f"{r['ratio']:.3f}",
                r["target"],
                r["status"],
            ]
            for r in rows
        ],
        headers=["benchmark", "figure", "old", "new", "new / old", "target", ""],
        tablefmt="github",
        disable_numparse=True,
    )

    def where(payload: dict[str, Any]) -> str:
        machine = payload.get("machine", {})
        return (
            f"{payload.get('date', '?')} {payload.get('mode', '?')} on {machine.get('cpu', '?')}"
            f", {machine.get('cores', '?')} cores, load before "
            f"{machine.get('load_average_before', '?')}"
        )

    regressed = sum(1 for r in rows if r["status"] == "REGRESSED")
    return "\n".join(
        [
            f"old: {where(old)}",
            f"new: {where(new)}",
            table,
            f"{regressed} target(s) met before and not now",
        ]
    )
