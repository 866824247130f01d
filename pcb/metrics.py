"""Re-ID ranking metrics: squared Euclidean distances, CMC and mAP (Market-1501 protocol).

The protocol (facts.md section 3, torchreid's "market1501" setting): for each query, gallery
entries with the same person id AND the same camera are dropped; a query left with no true
match is skipped; CMC(k) is the fraction of the remaining (valid) queries whose first true
match is within the top k; AP is the non-interpolated mean of the precision at each true
match; mAP is the mean AP over valid queries. Distractors (pid 0) are ordinary negatives.

Ties: gallery entries at equal distance are ranked by gallery index (a stable sort), so results
are deterministic and do not depend on the sort algorithm numpy happens to pick.

`evaluate_ranking` is the fast, vectorised form; `evaluate_ranking_reference` a plain per-query
loop that is its oracle in the tests (torchreid's `rank.py` pattern).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import PcbError

# Queries ranked per chunk: bounds memory to a few (chunk x gallery) arrays, ~0.2 GB at most
# for Market's 15,913 gallery images, while keeping numpy's per-call overhead negligible.
DEFAULT_CHUNK_ROWS = 256

AP_VARIANT = "non-interpolated"
# --ap-ties: how AP treats gallery entries at the same distance. "ranked" (the default, above):
# one by one in gallery order. "grouped": as one threshold, which is what
# sklearn.metrics.average_precision_score does and what the upstream evaluation prints
# (syfafterzy/PCB_RPP_for_reID at e29cf54, reid/evaluation_metrics/ranking.py, mean_ap: y_true
# the matches among the kept entries, y_score the negated distances). Without ties both agree.
AP_TIES = ("ranked", "grouped")
AP_VARIANTS = {
    "ranked": AP_VARIANT,
    "grouped": (
        "non-interpolated, tied distances grouped (sklearn average_precision_score, as the "
        "upstream evaluation)"
    ),
}


def squared_euclidean(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(n_q x d), (n_g x d) -> (n_q x n_g) squared Euclidean distances.

    Computed as ||q||^2 + ||g||^2 - 2 q.g (one matrix product, in place, so the only large
    allocation is the result) and clipped at 0, since rounding can make the expansion slightly
    negative for near-identical vectors. float32 inputs give float32, otherwise float64. Each
    row depends only on its query, so callers may split the queries into chunks.
    """
    q = np.asarray(query)
    g = np.asarray(gallery)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise PcbError(
            f"features must be two 2-D arrays with the same width, got query {q.shape} and "
            f"gallery {g.shape}: pass one row per image"
        )
    dtype = np.result_type(q.dtype, g.dtype, np.float32)
    q = q.astype(dtype, copy=False)
    g = g.astype(dtype, copy=False)
    out = q @ g.T
    out *= -2
    out += np.einsum("ij,ij->i", q, q)[:, None]
    out += np.einsum("ij,ij->i", g, g)[None, :]
    np.maximum(out, 0, out=out)
    return out


@dataclass(frozen=True, eq=False)
class RankingResult:
    """CMC and mAP of one ranking, as fractions in [0, 1].

    cmc[k - 1] is CMC at rank k, for k = 1 .. max_rank. `ap[i]` is the AP of query
    `valid_queries[i]` (an index into the query list); skipped queries have no entry.
    """

    cmc: np.ndarray
    mAP: float
    num_valid_queries: int
    ap: np.ndarray
    valid_queries: np.ndarray
    num_queries: int

    @property
    def max_rank(self) -> int:
        return len(self.cmc)

    def top(self, k: int) -> float:
        """CMC at rank k (1-based): top(1) is rank-1 accuracy."""
        if not 1 <= k <= self.max_rank:
            raise PcbError(
                f"rank {k} is outside the computed CMC (1..{self.max_rank}): "
                f"evaluate with max_rank >= {k}"
            )
        return float(self.cmc[k - 1])


def _check_inputs(
    distmat: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_camids: np.ndarray,
    gallery_camids: np.ndarray,
    max_rank: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    distmat = np.asarray(distmat)
    labels = [np.asarray(a) for a in (query_pids, gallery_pids, query_camids, gallery_camids)]
    if distmat.ndim != 2:
        raise PcbError(
            f"the distance matrix must be 2-D (queries x gallery), got shape {distmat.shape}"
        )
    if not np.issubdtype(distmat.dtype, np.number) or np.iscomplexobj(distmat):
        raise PcbError(f"the distance matrix must hold real numbers, got dtype {distmat.dtype}")
    num_q, num_g = distmat.shape
    names = ("query_pids", "gallery_pids", "query_camids", "gallery_camids")
    expected = (num_q, num_g, num_q, num_g)
    for name, array, size in zip(names, labels, expected):
        if array.shape != (size,):
            raise PcbError(
                f"{name} has shape {array.shape} but the distance matrix {distmat.shape} needs "
                f"({size},): give one label per query row / gallery column"
            )
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise PcbError(f"max_rank must be a positive integer, got {max_rank!r}")
    return (distmat, *labels)


def _check_finite(rows: np.ndarray, first_row: int) -> None:
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        where = (np.flatnonzero(bad) + first_row).tolist()
        raise PcbError(
            f"the distance matrix has NaN or Inf in query rows {where[:10]}"
            f"{' ...' if len(where) > 10 else ''}: the features behind them are not finite; "
            "re-run inference and check the dumps"
        )


def _no_valid_query(num_q: int) -> PcbError:
    return PcbError(
        f"none of the {num_q} queries has a true match in the gallery from another camera, so "
        "CMC and mAP are undefined: check that query and gallery come from the same dataset "
        "(Market-1501 query/ and bounding_box_test/)"
    )


def _stable_order(rows: np.ndarray) -> np.ndarray:
    """np.argsort(rows, axis=1, kind="stable"), faster for float32.

    A stable argsort is several times slower than sorting plain integers. For float32 we pack
    (order-preserving bits of the distance, gallery index) into one uint64: the keys are then
    unique and sort exactly like (distance, index), i.e. the stable order.
    """
    if rows.dtype != np.float32:
        return np.argsort(rows, axis=1, kind="stable")
    rows = np.ascontiguousarray(rows)
    bits = rows.view(np.uint32)
    # Non-negative floats order like their bits: setting the sign bit puts them above all
    # negatives. Negative floats: flipping every bit puts larger magnitudes first. -0.0 is not
    # `< 0`, so it gets the key of +0.0 and ties with it as it should.
    key = bits | np.uint32(0x80000000)
    negative = rows < 0
    if negative.any():
        key[negative] = ~bits[negative]
    keys = key.astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= np.arange(rows.shape[1], dtype=np.uint64)
    keys.sort(axis=1)
    keys &= np.uint64(0xFFFFFFFF)
    return keys.view(np.int64)  # the indices, < 2**32, read the same as int64


def _count_before(flags: np.ndarray, row_start: np.ndarray, row: np.ndarray) -> np.ndarray:
    """For entries grouped by row: how many earlier entries of the same row are flagged."""
    before = np.cumsum(flags) - flags  # flagged entries before each one, over all rows
    return before - before[row_start[row]]


def evaluate_ranking(
    distmat: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_camids: np.ndarray,
    gallery_camids: np.ndarray,
    max_rank: int = 50,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Any = None,
) -> RankingResult:
    """CMC and mAP under the Market-1501 protocol (module docstring), vectorised.
    `progress.update(n)` is told of each chunk of n queries ranked (pcb/progress.py).

    Queries are ranked `chunk_rows` at a time with whole-array numpy operations, so memory is
    a few (chunk_rows x n_gallery) arrays whatever the number of queries. The CMC always has
    `max_rank` entries; ranks beyond the gallery size repeat the last value (every valid query
    has its first match within the gallery, so that value is 1.0).
    """
    distmat, q_pids, g_pids, q_cams, g_cams = _check_inputs(
        distmat, query_pids, gallery_pids, query_camids, gallery_camids, max_rank
    )
    if not np.issubdtype(distmat.dtype, np.floating):
        distmat = distmat.astype(np.float64)
    if chunk_rows < 1:
        raise PcbError(f"chunk_rows must be positive, got {chunk_rows}")
    num_q, num_g = distmat.shape
    if num_g == 0:
        raise _no_valid_query(num_q)

    aps: list[np.ndarray] = []
    first_ranks: list[np.ndarray] = []
    valid_rows: list[np.ndarray] = []
    for start in range(0, num_q, chunk_rows):
        rows = distmat[start : start + chunk_rows]
        _check_finite(rows, start)
        order = _stable_order(rows)
        n = len(rows)
        # The gallery entries of the query's person, in rank order: a few per query, so the
        # rest works on these short lists, not on (chunk x gallery) arrays. nonzero() is
        # row-major: entries come grouped by query and, within a query, in rank order.
        row, col = np.nonzero(g_pids[order] == q_pids[start : start + n, None])
        junk = g_cams[order[row, col]] == q_cams[start + row]  # same camera: dropped
        good = ~junk  # true matches
        per_row = np.bincount(row, minlength=n)
        row_start = np.cumsum(per_row) - per_row
        junk_before = _count_before(junk, row_start, row)
        good_before = _count_before(good, row_start, row)

        hit_row = row[good]
        hit_rank = col[good] + 1 - junk_before[good]  # 1-based rank among the kept entries
        hits_so_far = good_before[good] + 1  # true matches up to and including this one
        precision = hits_so_far / hit_rank
        num_good = np.bincount(hit_row, minlength=n)
        ap_sum = np.bincount(hit_row, weights=precision, minlength=n)
        valid = num_good > 0

        # Each valid query has exactly one first match, and they come in query order.
        first_ranks.append(hit_rank[hits_so_far == 1] - 1)
        aps.append(ap_sum[valid] / num_good[valid])
        valid_rows.append(np.flatnonzero(valid) + start)
        if progress is not None:
            progress.update(n)

    ap = np.concatenate(aps) if aps else np.zeros(0)
    num_valid = len(ap)
    if num_valid == 0:
        raise _no_valid_query(num_q)
    first = np.concatenate(first_ranks)
    counts = np.bincount(first[first < max_rank], minlength=max_rank)
    cmc = np.cumsum(counts).astype(np.float64) / num_valid
    return RankingResult(
        cmc=cmc,
        mAP=float(ap.mean()),
        num_valid_queries=num_valid,
        ap=ap,
        valid_queries=np.concatenate(valid_rows),
        num_queries=num_q,
    )


def evaluate_ranking_reference(
    distmat: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_camids: np.ndarray,
    gallery_camids: np.ndarray,
    max_rank: int = 50,
) -> RankingResult:
    """The same metrics as `evaluate_ranking`, one query at a time: slow, plainly readable.

    The oracle for the fast form in the tests; follows torchreid's `eval_market1501`.
    """
    distmat, q_pids, g_pids, q_cams, g_cams = _check_inputs(
        distmat, query_pids, gallery_pids, query_camids, gallery_camids, max_rank
    )
    num_q = distmat.shape[0]
    cmc_counts = np.zeros(max_rank, dtype=np.int64)
    aps = []
    valid_queries = []
    for q in range(num_q):
        _check_finite(distmat[q : q + 1], q)
        order = np.argsort(distmat[q], kind="stable")
        remove = (g_pids[order] == q_pids[q]) & (g_cams[order] == q_cams[q])
        keep = ~remove
        matches = (g_pids[order] == q_pids[q])[keep]  # 1 where a kept entry is a true match
        if not matches.any():
            continue  # no true match from another camera: the query is skipped
        valid_queries.append(q)

        first_hit = int(np.flatnonzero(matches)[0])  # 0-based rank of the first true match
        for k in range(max_rank):
            if first_hit <= k:
                cmc_counts[k] += 1

        precisions = []
        hits = 0
        for rank, is_match in enumerate(matches, start=1):
            if is_match:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / len(precisions))

    if not valid_queries:
        raise _no_valid_query(num_q)
    num_valid = len(valid_queries)
    ap = np.asarray(aps, dtype=np.float64)
    return RankingResult(
        cmc=cmc_counts.astype(np.float64) / num_valid,
        mAP=float(ap.mean()),
        num_valid_queries=num_valid,
        ap=ap,
        valid_queries=np.asarray(valid_queries, dtype=np.intp),
        num_queries=num_q,
    )


def grouped_average_precision(
    distmat: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_camids: np.ndarray,
    gallery_camids: np.ndarray,
    queries: np.ndarray,
    progress: Any = None,
) -> np.ndarray:
    """AP of each of `queries` (the valid ones, as RankingResult.valid_queries) with tied
    distances as one threshold: sklearn's average_precision_score on the gallery entries kept
    under the protocol (same person and camera dropped), scored by negated distance, as the
    upstream evaluation computes it. About a millisecond per query at Market scale."""
    from sklearn.metrics import average_precision_score

    q_pids, g_pids = np.asarray(query_pids), np.asarray(gallery_pids)
    q_cams, g_cams = np.asarray(query_camids), np.asarray(gallery_camids)
    aps = np.empty(len(queries), dtype=np.float64)
    for i, q in enumerate(queries):
        keep = (g_pids != q_pids[q]) | (g_cams != q_cams[q])
        aps[i] = average_precision_score(g_pids[keep] == q_pids[q], -distmat[q][keep])
        if progress is not None:
            progress.update(1)
    return aps
