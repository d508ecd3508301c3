"""Exact top-K with candidate filters, batching, and the two reference scorers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicrec.arrays import Ragged
from musicrec.evaluate.ranking import rank_users, task_filter, topk
from musicrec.models import ItemIndex, TrainingData
from musicrec.models.mostpop import MostPop
from musicrec.models.transition import Transition


def brute_topk(scores: np.ndarray, k: int, exclude=None, only=None) -> list[list[int]]:
    out = []
    for b, row in enumerate(scores):
        cand = range(len(row))
        if exclude is not None:
            cand = [i for i in cand if i not in set(exclude[b].tolist())]
        if only is not None:
            cand = [i for i in cand if i in set(only[b].tolist())]
        best = sorted(cand, key=lambda i: (-row[i], i))[:k]
        out.append(best + [-1] * (k - len(best)))
    return out


@pytest.mark.parametrize("mode", ["none", "exclude", "only"])
def test_topk_is_exact_under_heavy_ties(mode):
    rng = np.random.default_rng({"none": 0, "exclude": 1, "only": 2}[mode])
    for _ in range(150):
        b, n, k = int(rng.integers(1, 6)), int(rng.integers(1, 50)), int(rng.integers(1, 20))
        # Few distinct values so that ties straddle the k-th position most of the time.
        scores = rng.integers(0, 4, size=(b, n)).astype(np.float32)
        lists = [rng.integers(0, n, size=int(rng.integers(0, n + 1))) for _ in range(b)]
        kw = {} if mode == "none" else {mode: lists}
        idx, vals = topk(torch.from_numpy(scores), k, **kw)
        assert idx.tolist() == brute_topk(scores, k, **kw)
        got = idx.numpy()
        assert np.array_equal(vals.numpy()[got >= 0], scores[np.nonzero(got >= 0)[0], got[got >= 0]])
        assert torch.isinf(vals[idx < 0]).all()


def test_topk_does_not_modify_scores_unless_inplace():
    scores = torch.tensor([[3.0, 2.0, 1.0]])
    topk(scores, 2, exclude=[[0]])
    assert scores.tolist() == [[3.0, 2.0, 1.0]]
    topk(scores, 2, exclude=[[0]], inplace=True)
    assert scores[0, 0] == float("-inf")


def test_topk_rejects_nan_and_bad_filters():
    with pytest.raises(ValueError, match="NaN"):
        topk(torch.tensor([[1.0, float("nan"), 0.0]]), 2)
    with pytest.raises(ValueError, match="NaN"):  # a NaN row whose top-k also holds a tie
        topk(torch.tensor([[0.0, 2.0, 1.0, 1.0, float("nan")]]), 3)
    with pytest.raises(ValueError, match="NaN"):  # fewer columns than k: the sort path
        topk(torch.tensor([[1.0, float("nan")]]), 5)
    with pytest.raises(ValueError, match="dense indices"):
        topk(torch.zeros(1, 3), 2, exclude=[[3]])
    with pytest.raises(ValueError, match="either"):
        topk(torch.zeros(1, 3), 2, exclude=[[0]], only=[[1]])
    with pytest.raises(ValueError, match="unknown task"):
        task_filter("T5")


def embeddings(n_users: int, n_items: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Small integer embeddings give many exactly tied inner products.
    return (
        torch.randint(-1, 2, (n_users, 3), generator=gen).float(),
        torch.randint(-1, 2, (n_items, 3), generator=gen).float(),
    )


@pytest.mark.parametrize("task", ["T1", "T2", "T3", "T4", "next_track"])
def test_rank_users_matches_brute_force_and_filters(task):
    rng = np.random.default_rng(3)
    users, items = embeddings(40, 60, seed=5)
    k = 15
    hist = [rng.integers(0, 60, size=int(rng.integers(0, 30))) for _ in range(40)]
    hist[0] = np.array([7, 7, 3])  # fewer than k distinct history items
    ranked = rank_users((users, items), hist, task, k, batch_size=7)
    scores = (users @ items.T).numpy()
    kind = task_filter(task)
    expected = brute_topk(scores, k, **({} if kind is None else {kind: hist}))
    assert ranked.tolist() == expected
    for u, h in enumerate(hist):
        recs = ranked[u][ranked[u] >= 0]
        assert len(set(recs.tolist())) == len(recs)
        if kind == "exclude":
            assert not set(recs.tolist()) & set(h.tolist())
            assert len(recs) == k
        elif kind == "only":
            assert set(recs.tolist()) <= set(h.tolist())
            assert len(recs) == min(k, len(set(h.tolist())))
    if kind == "only":
        assert ranked[0].tolist() == sorted([3, 7], key=lambda i: (-scores[0, i], i)) + [-1] * (k - 2)


@pytest.mark.gpu
@pytest.mark.parametrize("task", ["T1", "T2", "next_track"])
def test_rank_users_on_cuda_matches_brute_force(task):
    """CUDA's topk orders ties differently from the CPU's: the tie repair must still give the
    exact (-score, item id) order, on the device."""
    rng = np.random.default_rng(4)
    users, items = embeddings(64, 300, seed=9)
    hist = [rng.integers(0, 300, size=int(rng.integers(0, 40))) for _ in range(64)]
    ranked = rank_users((users.cuda(), items.cuda()), hist, task, 25, batch_size=16)
    kind = task_filter(task)
    expected = brute_topk((users @ items.T).numpy(), 25, **({} if kind is None else {kind: hist}))
    assert ranked.tolist() == expected


def test_batching_gives_identical_results():
    users, items = embeddings(50, 80, seed=11)
    hist = [np.arange(u % 9) * 3 for u in range(50)]
    one = rank_users((users, items), hist, "T1", 20, batch_size=50)
    for bs in (1, 4, 13, None):
        assert np.array_equal(rank_users((users, items), hist, "T1", 20, batch_size=bs), one)
    # A score function of user ranges gives the same as the embedding pair.
    via_fn = rank_users(lambda a, b: users[a:b] @ items.T, hist, "T1", 20, batch_size=6)
    assert np.array_equal(via_fn, one)


def test_item_index_maps_and_drops_unknown():
    index = ItemIndex.from_items([30, 10, 20, 10])
    assert index.ids.tolist() == [10, 20, 30]
    assert index.to_dense(np.array([20, 25, 10, 99])).tolist() == [1, -1, 0, -1]
    assert index.to_raw(np.array([2, -1, 0])).tolist() == [30, -1, 10]
    rows, dropped = index.map_rows([[10, 11, 30], [], [99]])
    assert [r.tolist() for r in rows.to_lists()] == [[0, 2], [], []]
    assert dropped == 2


@pytest.mark.parametrize(
    "raw",
    [
        [30, 10, 20, 10, 0],
        [7],
        [],
        [5, 2**40, 5, 3],  # ids far above the event count: the sorting path
        [4, -1, 4],  # a negative id: the sorting path too
    ],
)
def test_item_index_indexing_is_from_items_then_to_dense(raw):
    raw = np.array(raw, dtype=np.int64)
    index, dense = ItemIndex.indexing(raw)
    expected = ItemIndex.from_items(raw)
    assert np.array_equal(index.ids, expected.ids) and index.ids.dtype == np.int64
    assert np.array_equal(dense, expected.to_dense(raw)) and dense.dtype == np.int64


def test_item_index_indexing_on_many_ids():
    raw = np.random.default_rng(3).zipf(1.5, 50_000) % 20_000
    index, dense = ItemIndex.indexing(raw)
    assert np.array_equal(index.ids, np.unique(raw)) and np.array_equal(index.ids[dense], raw)


def test_mostpop_counts_training_events():
    scorer = MostPop().fit(TrainingData.of([np.array([2, 2, 0]), np.array([2, 1])], n_items=4))
    s = scorer.score(Ragged.from_lists([np.array([0]), np.array([], dtype=np.int64)]))
    assert s.shape == (2, 4) and s.dtype == torch.float32
    assert s[0].tolist() == [1.0, 1.0, 3.0, 0.0] and torch.equal(s[0], s[1])
    s[0, 0] = -1  # callers may write into the scores
    assert scorer.score(Ragged.from_lists([np.array([0])]))[0, 0] == 1.0


def test_transition_counts_pairs_within_sequences_and_backs_off_to_popularity():
    seqs = [np.array([0, 1, 0, 1]), np.array([1, 2]), np.array([3, 3, 3, 3, 3])]
    scorer = Transition().fit(TrainingData.of(seqs, n_items=5))
    s = scorer.score(Ragged.from_lists([np.array([2, 0]), np.array([3, 1]), np.array([], dtype=np.int64)])).double()
    # 0 -> 1 twice; the pair (1, 1) across the sequence boundary must not be counted.
    assert s[0, 1] == pytest.approx(2, abs=1e-5)
    assert s[1, 0] == pytest.approx(1, abs=1e-5) and s[1, 2] == pytest.approx(1, abs=1e-5)
    assert s[1, 1] < 1e-5
    # Unseen transitions are ordered by popularity (counts 5, 3, 2, 1, 0), not by id.
    idx, _ = topk(s[2:].float(), 5)
    assert idx[0].tolist() == [3, 1, 0, 2, 4]
    assert s[0].argsort(descending=True, stable=True)[:2].tolist() == [1, 3]
