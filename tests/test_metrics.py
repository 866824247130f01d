"""Ranking metrics: hand-worked cases, and the fast form against the per-query oracle."""

from __future__ import annotations

import numpy as np
import pytest

from pcb.errors import PcbError
from pcb.metrics import (
    _stable_order,
    evaluate_ranking,
    evaluate_ranking_reference,
    squared_euclidean,
)

BOTH = pytest.mark.parametrize(
    "evaluate", [evaluate_ranking, evaluate_ranking_reference], ids=["fast", "reference"]
)


def rank(evaluate, dist, qp, gp, qc, gc, max_rank=5, **kwargs):
    return evaluate(
        np.asarray(dist, dtype=np.float64),
        np.asarray(qp),
        np.asarray(gp),
        np.asarray(qc),
        np.asarray(gc),
        max_rank=max_rank,
        **kwargs,
    )


# One query (pid 1, camera 1) against five gallery images, already in distance order.
# g0 is pid 1 seen by camera 1 too: dropped. The kept list is g1 (pid 2), g2 (match),
# g3 (distractor pid 0, a negative), g4 (match): true matches at kept ranks 2 and 4.
#   CMC: first match at rank 2 -> [0, 1, 1, 1, 1]; AP = (1/2 + 2/4) / 2 = 0.5.
CASE_DIST = [[0.1, 0.2, 0.3, 0.4, 0.5]]
CASE_GP = [1, 2, 1, 0, 1]
CASE_GC = [1, 2, 2, 3, 3]


@BOTH
def test_same_camera_match_is_dropped(evaluate):
    result = rank(evaluate, CASE_DIST, [1], CASE_GP, [1], CASE_GC)
    assert result.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert result.mAP == pytest.approx(0.5)
    assert result.num_valid_queries == 1
    assert result.top(1) == 0.0
    assert result.top(2) == 1.0


@BOTH
def test_same_pid_other_camera_is_kept(evaluate):
    # The same gallery with g0 moved to camera 4: it now counts, matches at ranks 1, 3, 5.
    #   CMC [1, 1, 1, 1, 1]; AP = (1/1 + 2/3 + 3/5) / 3 = 34/45.
    result = rank(evaluate, CASE_DIST, [1], CASE_GP, [1], [4, 2, 2, 3, 3])
    assert result.cmc.tolist() == [1.0] * 5
    assert result.mAP == pytest.approx(34 / 45)


@BOTH
def test_ap_of_matches_at_ranks_one_and_three(evaluate):
    # match, negative, match -> AP = (1/1 + 2/3) / 2 = 5/6.
    result = rank(evaluate, [[1.0, 2.0, 3.0]], [7], [7, 8, 7], [1], [2, 2, 3])
    assert result.mAP == pytest.approx(5 / 6)
    assert result.ap.tolist() == pytest.approx([5 / 6])
    assert result.top(1) == 1.0


@BOTH
def test_distractor_is_a_negative(evaluate):
    # The nearest gallery image is a distractor (pid 0), even from the query's own camera:
    # it is kept as a negative, so the true match falls to rank 2. AP = 1/2.
    result = rank(evaluate, [[0.0, 1.0]], [5], [0, 5], [1], [1, 2])
    assert result.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert result.mAP == pytest.approx(0.5)


@BOTH
def test_query_without_valid_match_is_skipped(evaluate):
    # q0: the CASE query (AP 0.5, first match rank 2).
    # q1: pid 1 camera 3: g4 (pid 1, camera 3) is dropped but g0 and g2 remain -> not skipped;
    #     kept order g0 (match), g1, g2 (match), g3 -> matches at ranks 1 and 3: AP 5/6.
    # q2: pid 2 camera 2: its only gallery image g1 is camera 2 too -> skipped.
    # q3: pid 9, absent from the gallery -> skipped.
    dist = CASE_DIST * 4
    result = rank(evaluate, dist, [1, 1, 2, 9], CASE_GP, [1, 3, 2, 1], CASE_GC)
    assert result.num_valid_queries == 2
    assert result.num_queries == 4
    assert result.valid_queries.tolist() == [0, 1]
    assert result.ap.tolist() == pytest.approx([0.5, 5 / 6])
    # mAP = (1/2 + 5/6) / 2 = 2/3; CMC: q1 hits at rank 1, q0 at rank 2.
    assert result.mAP == pytest.approx(2 / 3)
    assert result.cmc.tolist() == [0.5, 1.0, 1.0, 1.0, 1.0]


@BOTH
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_ties_are_broken_by_gallery_order(evaluate, dtype):
    # Both gallery images at distance 1: the lower index ranks first.
    # Negative first -> match at rank 2 (AP 1/2); match first -> rank 1 (AP 1).
    dist = np.array([[1, 1]], dtype=dtype)
    neg_first = evaluate(dist, np.array([1]), np.array([2, 1]), np.array([1]), np.array([2, 2]))
    match_first = evaluate(dist, np.array([1]), np.array([1, 2]), np.array([1]), np.array([2, 2]))
    assert neg_first.top(1) == 0.0
    assert neg_first.mAP == pytest.approx(0.5)
    assert match_first.top(1) == 1.0
    assert match_first.mAP == pytest.approx(1.0)


@BOTH
def test_cmc_keeps_max_rank_beyond_the_gallery(evaluate):
    # Three gallery images, max_rank 6: the CMC keeps 6 entries, the tail repeats the last.
    result = rank(evaluate, [[3.0, 2.0, 1.0]], [1], [1, 2, 3], [1], [2, 2, 2], max_rank=6)
    assert result.cmc.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert result.max_rank == 6


@BOTH
def test_no_valid_query_is_an_error(evaluate):
    with pytest.raises(PcbError, match="none of the 1 queries has a true match"):
        rank(evaluate, [[1.0, 2.0]], [1], [1, 2], [1], [1, 1])


@BOTH
def test_empty_inputs_are_errors(evaluate):
    with pytest.raises(PcbError, match="none of the 0 queries"):
        rank(evaluate, np.zeros((0, 3)), [], [1, 2, 3], [], [1, 1, 1])
    with pytest.raises(PcbError, match="none of the 2 queries"):
        rank(evaluate, np.zeros((2, 0)), [1, 2], [], [1, 1], [])


@BOTH
@pytest.mark.parametrize(
    ("qp", "gp", "qc", "gc", "name"),
    [
        ([1, 2], [1, 2, 3], [1], [1, 1, 1], "query_pids"),
        ([1], [1, 2], [1], [1, 1, 1], "gallery_pids"),
        ([1], [1, 2, 3], [[1]], [1, 1, 1], "query_camids"),
        ([1], [1, 2, 3], [1], [1, 1], "gallery_camids"),
    ],
)
def test_label_shapes_are_checked(evaluate, qp, gp, qc, gc, name):
    with pytest.raises(PcbError, match=name):
        rank(evaluate, [[1.0, 2.0, 3.0]], qp, gp, qc, gc)


@BOTH
def test_bad_distance_matrices_are_errors(evaluate):
    with pytest.raises(PcbError, match="must be 2-D"):
        rank(evaluate, [1.0, 2.0], [1], [1, 2], [1], [2, 2])
    with pytest.raises(PcbError, match=r"NaN or Inf in query rows \[1\]"):
        rank(evaluate, [[1.0, 2.0], [np.nan, 1.0]], [1, 1], [1, 2], [1, 1], [2, 2])
    with pytest.raises(PcbError, match="max_rank must be a positive integer"):
        rank(evaluate, [[1.0, 2.0]], [1], [1, 2], [1], [2, 2], max_rank=0)


def test_top_outside_cmc_is_an_error():
    result = rank(evaluate_ranking, CASE_DIST, [1], CASE_GP, [1], CASE_GC, max_rank=3)
    with pytest.raises(PcbError, match="max_rank >= 4"):
        result.top(4)
    with pytest.raises(PcbError, match="outside"):
        result.top(0)


def test_stable_order_matches_numpy_stable_argsort():
    rng = np.random.default_rng(1)
    rows = rng.integers(-3, 4, size=(20, 50)).astype(np.float32)  # many ties, negatives
    rows[0] = 0.0
    rows[0, 1::2] = -0.0  # equal to +0.0 (so index order) but with other bits
    rows[1, ::2] = np.inf
    rows[2] = rng.standard_normal(50).astype(np.float32) * 1e-30
    rows[3] = rng.integers(-2, 3, 50).astype(np.float32) * np.float32(1e-45)  # subnormals
    expected = np.argsort(rows, axis=1, kind="stable")
    np.testing.assert_array_equal(_stable_order(rows), expected)
    np.testing.assert_array_equal(_stable_order(rows.astype(np.float64)), expected)


def random_problem(rng, num_q, num_g, num_ids, kind):
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.integers(1, 7, num_q)
    g_cams = rng.integers(1, 7, num_g)
    if kind == "float32":
        dist = rng.random((num_q, num_g), dtype=np.float32)
    elif kind == "float64":
        dist = rng.random((num_q, num_g))
    elif kind == "tied-float32":  # integer distances: ties everywhere
        dist = rng.integers(0, 5, (num_q, num_g)).astype(np.float32)
    else:  # tied integers
        dist = rng.integers(0, 3, (num_q, num_g))
    return dist, q_pids, g_pids, q_cams, g_cams


def assert_same(fast, slow):
    np.testing.assert_array_equal(fast.cmc, slow.cmc)
    np.testing.assert_array_equal(fast.valid_queries, slow.valid_queries)
    np.testing.assert_allclose(fast.ap, slow.ap, rtol=1e-12, atol=0)
    assert fast.mAP == pytest.approx(slow.mAP, rel=1e-12)
    assert fast.num_valid_queries == slow.num_valid_queries
    assert fast.num_queries == slow.num_queries


@pytest.mark.parametrize("kind", ["float32", "float64", "tied-float32", "tied-int"])
@pytest.mark.parametrize(
    ("num_q", "num_g", "num_ids", "max_rank", "chunk_rows"),
    [
        (1, 1, 1, 1, 256),
        (3, 4, 2, 10, 1),  # max_rank > gallery size
        (17, 30, 4, 50, 5),  # chunks of 5 with a partial last chunk
        (60, 200, 25, 20, 7),
        (40, 25, 3, 40, 256),  # max_rank > gallery size, many matches per query
        (50, 40, 60, 10, 8),  # more ids than gallery images: many queries skipped
    ],
)
def test_fast_equals_reference_on_random_problems(
    kind, num_q, num_g, num_ids, max_rank, chunk_rows
):
    rng = np.random.default_rng([num_q, num_g, len(kind)])
    problem = random_problem(rng, num_q, num_g, num_ids, kind)
    try:
        slow = evaluate_ranking_reference(*problem, max_rank=max_rank)
    except PcbError:  # no valid query in this draw: the fast form must say so too
        with pytest.raises(PcbError):
            evaluate_ranking(*problem, max_rank=max_rank, chunk_rows=chunk_rows)
        return
    fast = evaluate_ranking(*problem, max_rank=max_rank, chunk_rows=chunk_rows)
    assert len(fast.cmc) == max_rank
    assert_same(fast, slow)


@pytest.mark.parametrize("kind", ["float32", "tied-float32"])
def test_fast_equals_reference_medium(kind):
    # Market-like label statistics at a tenth of the size (the full size belongs to a benchmark).
    rng = np.random.default_rng(7)
    problem = random_problem(rng, 300, 2000, 150, kind)
    fast = evaluate_ranking(*problem, max_rank=50)
    slow = evaluate_ranking_reference(*problem, max_rank=50)
    assert 0 < fast.num_valid_queries <= 300
    assert_same(fast, slow)


def test_squared_euclidean_matches_the_definition():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((5, 8))
    g = rng.standard_normal((7, 8))
    expected = ((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    result = squared_euclidean(q, g)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-12)
    # Row chunks give the same rows.
    np.testing.assert_allclose(
        np.vstack([squared_euclidean(q[:2], g), squared_euclidean(q[2:], g)]), result, rtol=1e-12
    )


def test_squared_euclidean_keeps_float32_and_clips_at_zero():
    rng = np.random.default_rng(4)
    g = (rng.standard_normal((6, 64)) * 100).astype(np.float32)
    result = squared_euclidean(g, g)
    assert result.dtype == np.float32
    assert (result >= 0).all()
    np.testing.assert_allclose(np.diag(result), 0, atol=result.max() * 1e-5)


def test_squared_euclidean_checks_shapes():
    with pytest.raises(PcbError, match="same width"):
        squared_euclidean(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(PcbError, match="same width"):
        squared_euclidean(np.zeros(3), np.zeros((2, 3)))
