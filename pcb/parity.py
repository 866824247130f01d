"""The parity stage: a backend's per-image features against the onnxruntime features of the same
images (cosine similarity: min, mean, how many fall below a threshold) and the top-1 difference
of their evaluations; written into the backend's eval record as `parity`, which the report
shows, and flagged when the top-1 differs by more than the guide's 1 point.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .constants import FEATURE_BYTES, GUIDE_TOLERANCE, SPLITS
from .errors import PcbError
from .evaluate import DUMP_SUFFIXES, resolve_dump_dir
from .fileio import atomic_write_json, read_json
from .layout import RunLayout

REFERENCE = "onnxruntime"
DEFAULT_THRESHOLD = 0.99
LISTED = 5
# The guide's accuracy criterion: within 1 point of the reference.
TOP1_LIMIT_POINTS = GUIDE_TOLERANCE * 100.0


def dump_index(folder: Path) -> dict[str, Path]:
    """stem -> dump path of a split folder (`<stem>_0.bin`, `<stem>_1.bin` or `<stem>.bin`)."""
    folder = resolve_dump_dir(folder)
    index: dict[str, Path] = {}
    for entry in os.scandir(folder):
        if not entry.is_file():
            continue
        for suffix in DUMP_SUFFIXES:
            if entry.name.endswith(suffix):
                index.setdefault(entry.name[: -len(suffix)], Path(entry.path))
                break
    return index


def _read(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size != FEATURE_BYTES:
        raise PcbError(
            f"{path} holds {size} bytes, expected {FEATURE_BYTES} (one 2048 x 6 float32 "
            "feature): re-run that backend's inference"
        )
    return np.fromfile(path, dtype=np.float32).astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        # Two zero features agree exactly; a zero against a non-zero one does not at all.
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norm)


def feature_cosines(backend_root: Path, reference_root: Path) -> dict[str, float]:
    """'<split>/<stem>' -> cosine similarity, over every image of both splits; PcbError when
    the two backends did not dump the same images."""
    cosines: dict[str, float] = {}
    for split in SPLITS:
        ours = dump_index(backend_root / split)
        theirs = dump_index(reference_root / split)
        only_ours, only_theirs = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        if only_ours or only_theirs or not ours:
            parts = []
            if only_ours:
                parts.append(f"{len(only_ours)} only in {backend_root} (e.g. {only_ours[0]})")
            if only_theirs:
                parts.append(f"{len(only_theirs)} only in {reference_root} (e.g. {only_theirs[0]})")
            if not ours:
                parts.append("no dump at all")
            raise PcbError(
                f"{split}: the two backends' dumps are not of the same images: "
                + "; ".join(parts)
                + ". Run both inferences on this run's bins"
            )
        for stem in sorted(ours):
            cosines[f"{split}/{stem}"] = cosine(_read(ours[stem]), _read(theirs[stem]))
    return cosines


def parity_figures(
    cosines: Mapping[str, float],
    threshold: float,
    top1: float | None,
    reference_top1: float | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(figures, detail). The figures are what the report's parity table shows: cos_min,
    cos_mean, below_threshold, top1_diff (points, backend minus reference), the threshold and
    the top-1 verdict; the detail names the images (worst first) for whoever looks closer."""
    values = np.fromiter(cosines.values(), dtype=np.float64, count=len(cosines))
    names = list(cosines)
    order = np.argsort(values, kind="stable")
    below = [names[i] for i in order if values[i] < threshold]
    figures: dict[str, Any] = {
        "cos_min": float(values.min()),
        "cos_mean": float(values.mean()),
        "below_threshold": len(below),
        "top1_diff": None,
        "threshold": threshold,
    }
    if top1 is not None and reference_top1 is not None:
        diff = round((float(top1) - float(reference_top1)) * 100.0, 4)
        figures["top1_diff"] = diff
        # Rounding slack so that exactly one point is still within the guide's criterion.
        flagged = abs(diff) > TOP1_LIMIT_POINTS + 1e-9
        figures["top1_verdict"] = f"FLAG > {TOP1_LIMIT_POINTS:g} point" if flagged else "PASS"
    detail = {
        "images": len(values),
        "worst": [{"image": names[i], "cos": float(values[i])} for i in order[:LISTED]],
        "below_threshold": below[:100],
    }
    return figures, detail


def _eval_record(layout: RunLayout, backend: str) -> dict[str, Any]:
    path = layout.eval_path(backend)
    if not path.is_file():
        raise PcbError(
            f"{path} not found: evaluate {backend} first (`python -m pcb evaluate --run "
            f"{layout.root} --backend {backend} --dataset ...`)"
        )
    try:
        record = read_json(path)
    except (OSError, ValueError) as error:
        raise PcbError(f"cannot read {path} ({error}): re-run `python -m pcb evaluate`") from error
    if not isinstance(record, dict):
        raise PcbError(f"{path} is not an evaluation record: re-run `python -m pcb evaluate`")
    return record


def run_parity(
    layout: RunLayout,
    backend: str,
    reference: str = REFERENCE,
    threshold: float = DEFAULT_THRESHOLD,
    dumps: Path | None = None,
) -> dict[str, Any]:
    """Compare `backend`'s dumps with `reference`'s; write `parity` into eval/<backend>.json."""
    if backend == reference:
        raise PcbError(f"parity of {backend} against itself: give another --backend")
    if not 0.0 < threshold <= 1.0:
        raise PcbError(f"cosine threshold {threshold} is not in (0, 1]: e.g. 0.99")
    record = _eval_record(layout, backend)
    reference_record = _eval_record(layout, reference)
    root = Path(dumps) if dumps is not None else layout.dumps_dir(backend, "query").parent
    cosines = feature_cosines(root, layout.dumps_dir(reference, "query").parent)
    figures, detail = parity_figures(
        cosines, threshold, record.get("top1"), reference_record.get("top1")
    )
    record["parity"] = figures
    record["parity_detail"] = {"reference": reference, **detail}
    atomic_write_json(layout.eval_path(backend), record)
    print(
        f"{backend} vs {reference}: {detail['images']} images, cosine min "
        f"{figures['cos_min']:.6f}, mean {figures['cos_mean']:.6f}, "
        f"{figures['below_threshold']} below {threshold:g} "
        f"(worst: {detail['worst'][0]['image']})"
    )
    if figures["top1_diff"] is not None:
        print(f"top-1 difference: {figures['top1_diff']:+.2f} points: {figures['top1_verdict']}")
    print(f"written: parity in {layout.eval_path(backend)}")
    return figures
