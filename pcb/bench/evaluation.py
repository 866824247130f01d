"""Evaluation at Market-1501 scale: the evaluate path against a plain per-query reference.

Synthetic features of the real shape: 3,368 query and 15,913 gallery rows (13,115 of 750
identities and 2,798 distractors), 12,288-d float32, six cameras. The values are multiples of
1/8 between -0.5 and 0.5: every distance, by the matrix-product expansion or by the direct
sum of squared differences, is then exact in float32, so the two forms must agree bit for bit
and the CMC and mAP must be identical, not merely close.

The fast path (`evaluate_features`: one distance matrix, chunked vectorised ranking) runs in
a child process, which reports its time and its peak memory (the child's whole peak RSS,
features included, and tracemalloc's peak during the evaluation). The reference computes
each query's distances directly and ranks it with `evaluate_ranking_reference`; it is timed
on a subset of queries and extrapolated linearly to all of them (said so in the output).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PcbError
from .common import BenchConfig, BenchResult, Figure, ratio_figure

NUM_QUERY = 3368
NUM_GALLERY = 15913
NUM_DISTRACTORS = 2798
NUM_IDS = 750
DIM = 12288
NUM_CAMERAS = 6
SEED = 0
TARGET_SPEEDUP = 10.0
TARGET_PEAK_GB = 4.0
_CHUNK = 1024


def synthetic_labels(seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    identities = NUM_GALLERY - NUM_DISTRACTORS
    gallery_pids = np.concatenate(
        [rng.integers(1, NUM_IDS + 1, identities), np.zeros(NUM_DISTRACTORS, dtype=np.int64)]
    )
    return {
        "query_pids": rng.integers(1, NUM_IDS + 1, NUM_QUERY),
        "query_camids": rng.integers(1, NUM_CAMERAS + 1, NUM_QUERY),
        "gallery_pids": gallery_pids,
        "gallery_camids": rng.integers(1, NUM_CAMERAS + 1, NUM_GALLERY),
    }


def synthetic_features(pids: np.ndarray, seed: int) -> np.ndarray:
    """One row per image: a sparse identity pattern plus noise, in eighths (exact float32).

    Integers in -4..4 (a pattern of -1 / 0 / 1 plus noise in -3..3) divided by 8: squares,
    products and their sums over 12,288 dimensions stay multiples of 1/64 far below 2**24 of
    them, so every float32 distance is exact whatever the summation order. The pattern is weak
    against the noise, so rankings are imperfect (mAP well below 1) and ties, near-ties and
    late matches all occur, as with real features.
    """
    pattern_rng = np.random.default_rng(SEED + 1000)
    levels = np.array([-1, 0, 1], dtype=np.int8)
    patterns = pattern_rng.choice(levels, size=(NUM_IDS + 1, DIM), p=[0.11, 0.78, 0.11])
    patterns[0] = 0  # distractors share no pattern
    rng = np.random.default_rng(seed)
    out = np.empty((len(pids), DIM), dtype=np.float32)
    for start in range(0, len(pids), _CHUNK):
        rows = slice(start, start + _CHUNK)
        values = rng.integers(-3, 4, size=(len(pids[rows]), DIM), dtype=np.int8)
        values += patterns[pids[rows]]
        np.multiply(values, np.float32(0.125), out=out[rows], casting="unsafe")
    return out


def synthetic_problem(seed: int = SEED) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    labels = synthetic_labels(seed)
    qf = synthetic_features(labels["query_pids"], seed + 1)
    gf = synthetic_features(labels["gallery_pids"], seed + 2)
    return labels, qf, gf


def _records(pids: np.ndarray, camids: np.ndarray) -> list[Any]:
    from ..dataset import ImageRecord

    return [
        ImageRecord(path=Path(f"{i}.jpg"), stem=str(i), pid=int(p), camid=int(c))
        for i, (p, c) in enumerate(zip(pids, camids))
    ]


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started its program.

    /proc/self/status VmHWM, not getrusage: Linux carries ru_maxrss across fork and exec, so a
    child of a large benchmark process would report its parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def child_main(out_dir: str) -> None:
    """The fast path on the synthetic problem: writes result.npz, distmat.npy, stats.json."""
    from ..evaluate import evaluate_features

    labels, qf, gf = synthetic_problem()
    query = _records(labels["query_pids"], labels["query_camids"])
    gallery = _records(labels["gallery_pids"], labels["gallery_camids"])
    tracemalloc.start()
    start = time.perf_counter()
    result = evaluate_features(qf, gf, query, gallery)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = peak_rss_bytes()
    out = Path(out_dir)
    np.savez(
        out / "result.npz",
        cmc=result.cmc,
        ap=result.ap,
        valid_queries=result.valid_queries,
        mAP=np.float64(result.mAP),
    )
    from ..metrics import squared_euclidean

    np.save(out / "distmat.npy", squared_euclidean(qf, gf))
    stats = {
        "seconds": seconds,
        "peak_rss_bytes": peak_rss,
        "traced_peak_bytes": traced_peak,
        "input_bytes": int(qf.nbytes + gf.nbytes),
    }
    (out / "stats.json").write_text(json.dumps(stats), encoding="utf-8")


def _run_child(out_dir: Path) -> dict[str, Any]:
    code = f"from pcb.bench.evaluation import child_main; child_main({str(out_dir)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise PcbError(f"the evaluation benchmark's child failed: {done.stderr[-2000:]}")
    return json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))


def reference_distances(qf: np.ndarray, gf: np.ndarray, query: int) -> np.ndarray:
    """One query's squared Euclidean distances, straight from the definition: sum((g - q)^2)."""
    difference = gf - qf[query]
    return np.einsum("ij,ij->i", difference, difference)


def bench_evaluation(config: BenchConfig) -> BenchResult:
    from ..metrics import evaluate_ranking_reference

    with tempfile.TemporaryDirectory(prefix="pcb-bench-eval-") as scratch:
        out = Path(scratch)
        stats = _run_child(out)
        fast = np.load(out / "result.npz")
        distmat = np.load(out / "distmat.npy", mmap_mode="r")
        labels, qf, gf = synthetic_problem()
        subset = np.unique(np.linspace(0, NUM_QUERY - 1, config.reference_queries).astype(int))

        start = time.perf_counter()
        distances_equal = True
        for q in subset:
            row = reference_distances(qf, gf, int(q))
            distances_equal &= bool(np.array_equal(row, distmat[q]))
        distance_s = (time.perf_counter() - start) / len(subset)
        del qf, gf

        rows = np.arange(NUM_QUERY) if config.reference_ranks_all else subset
        start = time.perf_counter()
        reference = evaluate_ranking_reference(
            np.asarray(distmat[rows]),
            labels["query_pids"][rows],
            labels["gallery_pids"],
            labels["query_camids"][rows],
            labels["gallery_camids"],
        )
        ranking_s = (time.perf_counter() - start) / len(rows)
        del distmat

    # Per-query AP of the fast path for the reference's queries, matched by query index.
    fast_ap = dict(zip(fast["valid_queries"].tolist(), fast["ap"].tolist()))
    ref_ap = dict(zip(rows[reference.valid_queries].tolist(), reference.ap.tolist()))
    same_queries = set(ref_ap) == {q for q in fast_ap if q in set(rows.tolist())}
    ap_equal = same_queries and all(fast_ap[q] == ap for q, ap in ref_ap.items())
    if config.reference_ranks_all:
        identical = bool(
            distances_equal
            and np.array_equal(reference.cmc, fast["cmc"])
            and reference.mAP == float(fast["mAP"])
            and ap_equal
        )
        scope = f"all {NUM_QUERY} queries ranked by both"
    else:
        identical = bool(distances_equal and ap_equal)
        scope = f"{len(rows)} queries compared (quick mode)"
    if not identical:
        raise PcbError(
            f"the evaluate path disagrees with the per-query reference ({scope}): "
            f"distances equal: {distances_equal}, per-query AP equal: {ap_equal}; "
            "fix pcb/metrics.py"
        )
    reference_total = NUM_QUERY * (distance_s + ranking_s)
    speedup = reference_total / stats["seconds"]
    peak_gb = stats["peak_rss_bytes"] / 1e9
    result = BenchResult("evaluation")
    result.figures = [
        Figure("evaluate path (distances + ranking)", stats["seconds"], "s"),
        Figure(
            "plain per-query reference",
            reference_total,
            "s",
            note=(
                f"extrapolated: distances timed on {len(subset)} queries, ranking on "
                f"{len(rows)}, x {NUM_QUERY}"
            ),
        ),
        ratio_figure("reference / evaluate path", speedup, TARGET_SPEEDUP, note=scope),
        Figure(
            "peak memory (child RSS, features included)",
            peak_gb,
            "GB",
            f"< {TARGET_PEAK_GB:g}",
            bool(peak_gb < TARGET_PEAK_GB),
            note=f"features {stats['input_bytes'] / 1e9:.2f} GB, "
            f"traced during evaluate {stats['traced_peak_bytes'] / 1e9:.2f} GB",
        ),
        Figure("mAP (synthetic)", float(fast["mAP"]), "", note="identical in both"),
    ]
    result.details = {
        "shape": {"query": NUM_QUERY, "gallery": NUM_GALLERY, "dim": DIM},
        "child": stats,
        "reference_distance_s_per_query": distance_s,
        "reference_ranking_s_per_query": ranking_s,
        "reference_queries_timed": {"distances": int(len(subset)), "ranking": int(len(rows))},
        "identical": identical,
        "cmc_top1": float(fast["cmc"][0]),
        "mAP": float(fast["mAP"]),
    }
    return result
