"""Metrics of docs/metrics.md against a per-user brute force and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from musicrec.arrays import Ragged
from musicrec.evaluate.metrics import METRICS, compute_metrics, coverage


def brute(ranked: list[int], targets: set[int], k: int) -> dict[str, float]:
    """The formulas of docs/metrics.md, one user, written as literally as possible."""
    rel = [1 if (r in targets and r >= 0) else 0 for r in ranked[:k]]
    denom = min(len(targets), k)
    dcg = sum(rel[i] / math.log2(i + 2) for i in range(len(rel)))
    idcg = sum(1 / math.log2(i + 2) for i in range(denom))
    ap = sum(rel[i] * sum(rel[: i + 1]) / (i + 1) for i in range(len(rel))) / denom
    first = next((i + 1 for i, x in enumerate(rel) if x), None)
    return {
        "hr": float(any(rel)),
        "recall": sum(rel) / denom,
        "precision": sum(rel) / k,
        "ndcg": dcg / idcg,
        "map": ap,
        "mrr": 1 / first if first else 0.0,
    }


def random_case(rng: np.random.Generator, n_users: int, width: int, n_items: int):
    ranked = np.full((n_users, width), -1, dtype=np.int64)
    targets = []
    for u in range(n_users):
        n_cand = int(rng.integers(0, width + 1))
        ranked[u, :n_cand] = rng.choice(n_items, size=n_cand, replace=False)
        style = rng.integers(0, 5)
        if style == 0:  # every candidate is a target, plus more than k of them
            t = list(ranked[u, :n_cand]) + list(rng.integers(0, n_items, size=width))
        elif style == 1:  # a single target
            t = [int(rng.integers(0, n_items))]
        elif style == 2:  # nothing can be hit
            t = [n_items + 1, n_items + 2]
        elif style == 3:  # empty: not evaluated
            t = []
        else:  # duplicates in the events, as holdout targets have
            t = list(rng.integers(0, n_items, size=int(rng.integers(1, 3 * width))))
        targets.append(np.array(t, dtype=np.int64))
    return ranked, targets


def test_metrics_match_brute_force_on_random_cases():
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(40):
        width, n_items = int(rng.integers(1, 12)), int(rng.integers(12, 40))
        ranked, targets = random_case(rng, 25, width, n_items)
        ks = sorted({1, width, int(rng.integers(1, width + 1))})
        result = compute_metrics(ranked, targets, ks)
        evaluated = [u for u in range(len(targets)) if len(targets[u])]
        assert result.skipped_empty_targets == len(targets) - len(evaluated)
        assert np.array_equal(np.flatnonzero(result.evaluated), evaluated)
        for k in ks:
            for i, u in enumerate(evaluated):
                expected = brute(list(ranked[u]), set(targets[u].tolist()), k)
                for m in METRICS:
                    assert result.per_user[(m, k)][i] == pytest.approx(expected[m], abs=1e-12), (m, k, u)
                checked += 1
    assert checked > 500


def test_hand_computed_cases():
    l3 = math.log2(3)
    ranked = np.array(
        [
            [3, 1, -1],  # T={1,2}: one hit at rank 2, padding at rank 3
            [5, 6, 7],  # T={9}: no hit
            [2, 4, 8],  # T={2,4,8,9,10} (|T| > k): hits at 1, 2, 3
            [7, 0, 6],  # T={6}: single target at rank 3
        ]
    )
    targets = [[1, 2, 2], [9], [2, 4, 8, 9, 10], [6]]
    r = compute_metrics(ranked, targets, ks=(2, 3))
    pu = r.per_user
    # user 0 at k=2: rel = (0, 1), |T| = 2
    assert pu[("recall", 2)][0] == pytest.approx(1 / 2)
    assert pu[("precision", 2)][0] == pytest.approx(1 / 2)
    assert pu[("ndcg", 2)][0] == pytest.approx((1 / l3) / (1 + 1 / l3))
    assert pu[("map", 2)][0] == pytest.approx((1 / 2) * (1 / 2))
    assert pu[("mrr", 2)][0] == pytest.approx(1 / 2)
    # user 0 at k=3: padding adds nothing, precision divides by k anyway
    assert pu[("precision", 3)][0] == pytest.approx(1 / 3)
    assert pu[("ndcg", 3)][0] == pytest.approx((1 / l3) / (1 + 1 / l3))
    # user 1: nothing
    assert [pu[(m, 3)][1] for m in METRICS] == [0.0] * 6
    # user 2 at k=2: all hits, denominators min(|T|, k) = 2
    assert pu[("recall", 2)][2] == 1.0 and pu[("ndcg", 2)][2] == pytest.approx(1.0)
    assert pu[("map", 2)][2] == pytest.approx(1.0)
    # user 3 at k=3: rel = (0, 0, 1)
    assert pu[("ndcg", 3)][3] == pytest.approx(0.5)
    assert pu[("mrr", 3)][3] == pytest.approx(1 / 3)
    assert pu[("map", 3)][3] == pytest.approx(1 / 3)
    assert pu[("hr", 2)][3] == 0.0 and pu[("hr", 3)][3] == 1.0
    assert r.mean()[("hr", 3)] == pytest.approx(3 / 4)
    assert r.mean()[("recall", 2)] == pytest.approx((1 / 2 + 0 + 1 + 0) / 4)


def test_duplicate_candidate_is_a_bug():
    with pytest.raises(ValueError, match="twice"):
        compute_metrics(np.array([[1, 2, 1]]), [[1]], ks=(3,))
    # padding repeated is not a duplicate
    r = compute_metrics(np.array([[1, -1, -1]]), [[1]], ks=(3,))
    assert r.mean()[("hr", 3)] == 1.0


def test_invalid_inputs_rejected():
    with pytest.raises(ValueError, match="ranking width"):
        compute_metrics(np.array([[1, 2]]), [[1]], ks=(3,))
    with pytest.raises(ValueError, match="target rows"):
        compute_metrics(np.array([[1, 2]]), [[1], [2]], ks=(1,))
    with pytest.raises(ValueError, match="padding"):
        compute_metrics(np.array([[1, -2]]), [[1]], ks=(1,))
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(np.array([[1, 2]]), [[1]], ks=(1,), metrics=("auc",))


def test_empty_targets_are_counted_not_evaluated():
    r = compute_metrics(np.array([[1, 2], [1, 2], [3, 4]]), [[], [1], []], ks=(2,))
    assert r.skipped_empty_targets == 2 and r.n_evaluated == 1
    assert r.mean()[("hr", 2)] == 1.0
    nobody = compute_metrics(np.array([[1]]), [[]], ks=(1,))
    assert math.isnan(nobody.mean()[("ndcg", 1)])


def test_coverage():
    ranked = np.array([[0, 1, 2], [1, 3, -1]])
    assert coverage(ranked, 1, 10) == pytest.approx(2 / 10)  # {0, 1}
    assert coverage(ranked, 3, 10) == pytest.approx(4 / 10)  # {0, 1, 2, 3}, padding ignored


def test_ragged_helpers():
    arr = pa.array([[5, 1], None, [2, 2, 9], [], [4]], pa.list_(pa.int32()))
    sliced = Ragged.from_arrow(arr.slice(1, 3))
    assert [r.tolist() for r in sliced.to_lists()] == [[], [2, 2, 9], []]
    r = Ragged.from_lists([[5, 1, 5], [], [3]])
    assert [x.tolist() for x in r.distinct().to_lists()] == [[1, 5], [], [3]]
    assert [x.tolist() for x in r.take(np.array([2, -1, 0, 2])).to_lists()] == [[3], [], [5, 1, 5], [3]]
    assert [x.tolist() for x in Ragged.from_lists([]).take(np.array([-1, -1])).to_lists()] == [[], []]
    assert [x.tolist() for x in r.keep(r.values != 5).to_lists()] == [[1], [], [3]]
    assert [x.tolist() for x in r.rows(1, 3).to_lists()] == [[], [3]]
    with pytest.raises(ValueError):
        Ragged(np.array([1, 2]), np.array([0, 3]))
