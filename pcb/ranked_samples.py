"""What the ranked-results picture needs, kept by the evaluation: for a fixed choice of queries
(the best and the worst by AP, and a few drawn with a fixed seed), the top-k gallery images in
rank order with whether each is a true match. The picture (pcb/report/ranked.py) is then drawn
from this and the dataset's images without the dumps, cheaply at Market scale: only the
chosen rows of the distance matrix are sorted again.

The ranking is the evaluation's (metrics.py): gallery images of the query's person taken with
the query's camera are left out, ties go in gallery order. As torchreid's
visualize_ranked_results shows it: the query, then its top-k, true matches framed green,
false ones red.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .dataset import ImageRecord

TOP_K = 10
BEST, WORST, DRAWN = 3, 3, 2
SEED = 0


def choose_queries(valid: np.ndarray, ap: np.ndarray) -> list[tuple[int, str]]:
    """(query index, why) for the picture: the BEST highest-AP and WORST lowest-AP valid
    queries (ties by query index), then DRAWN more from the rest with a fixed seed."""
    order = np.lexsort((valid, -ap))  # best first; equal AP: lower index first
    best = [int(valid[i]) for i in order[:BEST]]
    worst_order = np.lexsort((valid, ap))
    worst = [int(valid[i]) for i in worst_order if int(valid[i]) not in best][:WORST]
    rest = sorted(set(map(int, valid)) - set(best) - set(worst))
    rng = np.random.default_rng(SEED)
    drawn = sorted(rng.choice(rest, size=min(DRAWN, len(rest)), replace=False).tolist())
    return (
        [(q, "best AP") for q in best]
        + [(q, "worst AP") for q in worst]
        + [(int(q), f"drawn (seed {SEED})") for q in drawn]
    )


def ranked_samples(
    distmat: np.ndarray,
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    valid: np.ndarray,
    ap: np.ndarray,
    top_k: int = TOP_K,
) -> list[dict[str, Any]]:
    """The chosen queries' top-k, as JSON-ready records (names relative to the dataset's
    split folders, so the picture can be drawn wherever the dataset is)."""
    g_pids = np.fromiter((r.pid for r in gallery), dtype=np.int64, count=len(gallery))
    g_cams = np.fromiter((r.camid for r in gallery), dtype=np.int64, count=len(gallery))
    ap_of = dict(zip(map(int, valid), map(float, ap)))
    samples = []
    for q, why in choose_queries(valid, ap):
        record = query[q]
        order = np.argsort(distmat[q], kind="stable")
        kept = order[~((g_pids[order] == record.pid) & (g_cams[order] == record.camid))]
        top = kept[:top_k]
        samples.append(
            {
                "query": record.path.name,
                "pid": record.pid,
                "ap": ap_of[q],
                "why": why,
                "top": [
                    {
                        "gallery": gallery[g].path.name,
                        "match": bool(g_pids[g] == record.pid),
                        "distance": float(distmat[q, g]),
                    }
                    for g in map(int, top)
                ],
            }
        )
    return samples
