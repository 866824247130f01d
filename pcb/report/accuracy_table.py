"""Accuracy per backend and run: against the guide's published top-1/5/10, against the
onnxruntime reference of the same checkpoint and data, and the feature parity where measured.

Pure functions of the loaded runs; the result is part of the report's JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..constants import GUIDE_ACCURACY, GUIDE_TOLERANCE
from .consistency import dataset_identity
from .runs import METRICS, REFERENCE_BACKEND, Evaluation, RunRecords, SourceIndex

NOT_COMPARABLE = "not comparable (synthetic data, untrained weights)"
COUNT_KEYS = ("num_query", "num_gallery", "num_gallery_ids", "num_valid_queries")
PARITY_KEYS = ("cos_min", "cos_mean", "below_threshold", "top1_diff")
# Rounding slack so 91.1 against 92.1 counts as exactly one point down, not 1.0000000001.
_EPSILON = 1e-9


def compare_metric(
    measured: float, published: float, demo: bool, tolerance: float = GUIDE_TOLERANCE
) -> tuple[float, str]:
    """(difference in points, verdict) of one fraction against the guide's."""
    diff_points = (measured - published) * 100.0
    if demo:
        return diff_points, NOT_COMPARABLE
    passed = diff_points >= -tolerance * 100.0 - _EPSILON
    return diff_points, "PASS" if passed else "FAIL"


def guide_comparison(record: Mapping[str, Any], demo: bool) -> tuple[dict[str, Any], bool | None]:
    """Per published metric the difference and verdict, and the overall verdict (None: demo)."""
    comparison = {}
    for metric, published in GUIDE_ACCURACY.items():
        diff, verdict = compare_metric(float(record[metric]), published, demo)
        comparison[metric] = {"guide": published, "diff_points": round(diff, 4), "verdict": verdict}
    passed = None if demo else all(c["verdict"] == "PASS" for c in comparison.values())
    return comparison, passed


def reference_comparison(
    record: Mapping[str, Any], reference: Mapping[str, Any], tolerance: float = GUIDE_TOLERANCE
) -> dict[str, Any]:
    """Differences to the onnxruntime figures of the same model and data, in points.

    Valid on demo data too: both backends ran the same untrained weights on the same images,
    so they must agree whatever the absolute numbers are.
    """
    diffs = {m: round((float(record[m]) - float(reference[m])) * 100.0, 4) for m in METRICS}
    passed = all(abs(d) <= tolerance * 100.0 + _EPSILON for d in diffs.values())
    return {"diff_points": diffs, "passed": passed}


def _keys(runs: Sequence[RunRecords]) -> dict[tuple[str, str], str]:
    """(run, backend) -> the report's key: the backend, or `backend @ run` when it repeats."""
    pairs = [(run.label, e.backend) for run in runs for e in run.evaluations]
    counts: dict[str, int] = {}
    for _, backend in pairs:
        counts[backend] = counts.get(backend, 0) + 1
    return {(r, b): b if counts[b] == 1 else f"{b} @ {r}" for r, b in pairs}


def _same_model_and_data(a: RunRecords, ea: Evaluation, b: RunRecords, eb: Evaluation) -> bool:
    md5_a = (a.export or {}).get("checkpoint_md5")
    md5_b = (b.export or {}).get("checkpoint_md5")
    same_data = dataset_identity(ea.record) == dataset_identity(eb.record)
    return bool(md5_a) and md5_a == md5_b and same_data


def find_reference(
    run: RunRecords, evaluation: Evaluation, runs: Sequence[RunRecords]
) -> tuple[RunRecords, Evaluation] | None:
    """The onnxruntime evaluation to hold a backend to: the same run's, else the only one in
    another run of the same checkpoint and dataset (the CPU and the NPU on different hosts)."""
    if evaluation.backend == REFERENCE_BACKEND:
        return None
    for other in run.evaluations:
        if other.backend == REFERENCE_BACKEND:
            return run, other
    candidates = [
        (r, e)
        for r in runs
        if r is not run
        for e in r.evaluations
        if e.backend == REFERENCE_BACKEND and _same_model_and_data(run, evaluation, r, e)
    ]
    return candidates[0] if len(candidates) == 1 else None


def parity_figures(record: Mapping[str, Any]) -> dict[str, Any] | None:
    parity = record.get("parity")
    if not isinstance(parity, Mapping):
        return None
    # The known figures first, in a fixed order; anything a backend adds after them.
    ordered = {k: parity[k] for k in PARITY_KEYS if k in parity}
    ordered.update(parity)
    return ordered


def accuracy_section(runs: Sequence[RunRecords], sources: SourceIndex) -> dict[str, dict[str, Any]]:
    keys = _keys(runs)
    section = {}
    for run in runs:
        for evaluation in run.evaluations:
            record = evaluation.record
            comparison, passed = guide_comparison(record, run.demo)
            entry: dict[str, Any] = {
                "run": run.label,
                "backend": evaluation.backend,
                "demo": run.demo,
                **{m: float(record[m]) for m in METRICS},
                **{k: record[k] for k in ("cmc", "ap_variant", *COUNT_KEYS) if k in record},
                "comparison": comparison,
                "passed": passed,
                "reference": None,
                "parity": parity_figures(record),
                "source": sources.entry(evaluation.source),
            }
            found = find_reference(run, evaluation, runs)
            if found is not None:
                ref_run, ref = found
                entry["reference"] = {
                    "key": keys[(ref_run.label, ref.backend)],
                    "run": ref_run.label,
                    **reference_comparison(record, ref.record),
                }
            section[keys[(run.label, evaluation.backend)]] = entry
    return section
