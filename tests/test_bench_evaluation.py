"""The evaluation benchmark's synthetic problem: exact distances, a meaningful ranking."""

from __future__ import annotations

import numpy as np

from pcb.bench import evaluation as ev
from pcb.metrics import evaluate_ranking, evaluate_ranking_reference, squared_euclidean


def test_labels_have_the_market_shape():
    labels = ev.synthetic_labels()
    assert labels["query_pids"].shape == (3368,)
    assert labels["gallery_pids"].shape == (15913,)
    assert (labels["gallery_pids"] == 0).sum() == 2798
    assert set(np.unique(labels["query_camids"])) == set(range(1, 7))


def _small_problem(queries: int = 40, gallery: int = 400):
    labels = ev.synthetic_labels()
    # The first gallery rows are identities; keep only those whose person has a query.
    qp = labels["query_pids"][:queries]
    qc = labels["query_camids"][:queries]
    keep = np.isin(labels["gallery_pids"], qp)
    gp = np.concatenate([labels["gallery_pids"][keep][:gallery], np.zeros(20, dtype=np.int64)])
    gc = np.concatenate([labels["gallery_camids"][keep][:gallery], np.ones(20, dtype=np.int64)])
    return (qp, qc, ev.synthetic_features(qp, 1)), (gp, gc, ev.synthetic_features(gp, 2))


def test_features_are_exact_float32_so_both_distance_forms_agree_bit_for_bit():
    (qp, qc, qf), (gp, gc, gf) = _small_problem()
    assert qf.dtype == np.float32 and qf.shape[1] == ev.DIM
    assert np.array_equal(qf * 8, np.round(qf * 8))  # eighths
    distmat = squared_euclidean(qf, gf)
    for q in range(len(qf)):
        assert np.array_equal(ev.reference_distances(qf, gf, q), distmat[q])


def test_fast_and_reference_rankings_are_identical_on_the_synthetic_problem():
    (qp, qc, qf), (gp, gc, gf) = _small_problem()
    distmat = squared_euclidean(qf, gf)
    fast = evaluate_ranking(distmat, qp, gp, qc, gc, chunk_rows=7)
    slow = evaluate_ranking_reference(distmat, qp, gp, qc, gc)
    assert np.array_equal(fast.cmc, slow.cmc)
    assert fast.mAP == slow.mAP
    assert np.array_equal(fast.ap, slow.ap)
    # Identity is visible but imperfect, as with real features.
    assert 0.05 < fast.mAP < 0.999


def test_peak_rss_is_read():
    assert ev.peak_rss_bytes() > 1_000_000
