"""The classic families against independent computations: implicit called directly (ALS, BPR),
brute-force cosine (ItemKNN), the numpy closed form (EASE), the formula (DecayPop)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from musicrec.arrays import Ragged
from musicrec.config.models import ALSConfig, BPRConfig, DecayPopConfig, EASEConfig, ItemKNNConfig
from musicrec.errors import InputError
from musicrec.models import TrainingData
from musicrec.models import matrix as matrix_module
from musicrec.models.als import ALS
from musicrec.models.bpr import BPR
from musicrec.models.decaypop import DecayPop
from musicrec.models.ease import EASE
from musicrec.models.itemknn import ItemKNN
from musicrec.models.matrix import user_item_matrix

N_ITEMS = 25


def sequences(seed: int = 0, users: int = 60) -> Ragged:
    rng = np.random.default_rng(seed)
    return Ragged.from_lists([rng.integers(0, N_ITEMS, size=rng.integers(1, 20)) for _ in range(users)])


def dense_matrix(rows: Ragged, n_items: int, counts: bool) -> np.ndarray:
    """The user × item matrix by plain loops (independent of user_item_matrix)."""
    out = np.zeros((len(rows), n_items), dtype=np.float32)
    for u, row in enumerate(rows.to_lists()):
        for item in row:
            out[u, item] = out[u, item] + 1 if counts else 1
    return out


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("bitmap", [True, False])
@pytest.mark.parametrize("values", ["binary", "counts"])
def test_user_item_matrix_is_binary_or_counts(values, bitmap, threads, monkeypatch):
    if not bitmap:  # the path of catalogues too large for a bitmap of the cells
        monkeypatch.setattr(matrix_module, "BITMAP_BYTES_PER_EVENT", 0)
    rows = Ragged.from_lists([[0, 2, 2, 2], [], [1, 0]])
    assert np.array_equal(user_item_matrix(rows, 4, values, threads).toarray(), dense_matrix(rows, 4, values == "counts"))
    rows = sequences(seed=5)
    before = rows.values.copy()
    matrix = user_item_matrix(rows, N_ITEMS, values, threads)
    assert np.array_equal(matrix.toarray(), dense_matrix(rows, N_ITEMS, values == "counts"))
    # Canonical CSR (what implicit expects), and the caller's rows are left as they were.
    assert matrix.has_canonical_format and np.array_equal(rows.values, before)


@pytest.mark.parametrize("values", ["binary", "counts"])
def test_als_factors_equal_implicit_called_directly(values):
    data = sequences()
    config = ALSConfig(factors=6, iterations=4, regularization=0.1, alpha=2.0, values=values, num_threads=2)
    model = ALS(config, seed=11).fit(TrainingData(data, N_ITEMS))
    direct = AlternatingLeastSquares(
        factors=6, regularization=0.1, alpha=2.0, iterations=4, num_threads=2, random_state=11
    )
    with threadpool_limits(1, "blas"):
        direct.fit(sp.csr_matrix(dense_matrix(data, N_ITEMS, values == "counts")), show_progress=False)
    assert np.array_equal(model.mf.item_factors, direct.item_factors)
    assert np.array_equal(model.mf.user_factors, direct.user_factors)
    assert np.array_equal(model.item_embeddings(), direct.item_factors)

    # Fold-in: implicit's own recalculate_user on the histories' rows ...
    histories = Ragged.from_lists([[3, 4, 4], [], [7, 1, 2, 9]])
    rows = sp.csr_matrix(dense_matrix(histories, N_ITEMS, values == "counts"))
    with threadpool_limits(1, "blas"):
        expected = direct.recalculate_user(np.arange(3), rows)
    folded = model.query_embeddings(histories)
    assert np.array_equal(folded, expected)
    assert torch.equal(model.score(histories), torch.from_numpy(expected @ direct.item_factors.T))
    # ... which solves Hu et al.'s normal equations (Yᵀ C_u Y + λ I) x = Yᵀ C_u p_u, in float64,
    # with implicit's confidence: alpha · value where the user has the item, 1 elsewhere.
    y = direct.item_factors.astype(np.float64)
    for u in range(3):
        r = rows[u].toarray().ravel().astype(np.float64)
        c = np.where(r > 0, 2.0 * r, 1.0)
        p = (r > 0).astype(np.float64)
        x = np.linalg.solve(y.T @ (c[:, None] * y) + 0.1 * np.eye(6), y.T @ (c * p))
        np.testing.assert_allclose(folded[u], x, rtol=1e-3, atol=1e-5)
    assert not folded[1].any()  # an empty history folds in to the zero vector


def test_bpr_factors_equal_implicit_called_directly_and_fold_in_is_the_mean_history_vector():
    data = sequences(1)
    config = BPRConfig(factors=5, iterations=7, learning_rate=0.05, regularization=0.02, num_threads=1)
    model = BPR(config, seed=5).fit(TrainingData(data, N_ITEMS))
    direct = BayesianPersonalizedRanking(
        factors=5, learning_rate=0.05, regularization=0.02, iterations=7, num_threads=1, random_state=5
    )
    with threadpool_limits(1, "blas"):
        direct.fit(sp.csr_matrix(dense_matrix(data, N_ITEMS, counts=False)), show_progress=False)
    assert np.array_equal(model.mf.item_factors, direct.item_factors)
    assert np.array_equal(model.mf.user_factors, direct.user_factors)

    histories = Ragged.from_lists([[3, 4, 4], []])
    q = model.query_embeddings(histories)
    items = direct.item_factors
    np.testing.assert_allclose(q[0], [*((2 * items[4, :5] + items[3, :5]) / 3), 1.0], rtol=1e-6)
    np.testing.assert_array_equal(q[1], [0, 0, 0, 0, 0, 1])
    scores = model.score(histories).numpy()
    np.testing.assert_allclose(scores[1], items[:, 5], rtol=1e-6)  # empty history: the item bias


def brute_force_itemknn(data: Ragged, n_items: int, k: int, recency: float, histories: Ragged) -> np.ndarray:
    x = dense_matrix(data, n_items, counts=False).astype(np.float64)
    sim = np.zeros((n_items, n_items))
    for i in range(n_items):
        for j in range(n_items):
            ni, nj = x[:, i].sum(), x[:, j].sum()
            if i != j and ni and nj:
                sim[i, j] = (x[:, i] * x[:, j]).sum() / math.sqrt(ni * nj)
    top = np.zeros_like(sim)
    for i in range(n_items):
        # Python's sort is stable: equal similarities keep index order (smaller item first).
        ranked = sorted((j for j in range(n_items) if sim[i, j] > 0), key=lambda j: -sim[i, j])
        top[i, ranked[:k]] = sim[i, ranked[:k]]
    out = np.zeros((len(histories), n_items))
    for u, row in enumerate(histories.to_lists()):
        for pos, item in enumerate(row):
            out[u] += recency ** (len(row) - 1 - pos) * top[item]
    return out


def test_itemknn_equals_brute_force_cosine_with_ties():
    # Items 1, 2 and 3 are each co-listened with item 0 by exactly one of three identical-count
    # users, so item 0's neighbours tie; with k=2 the smaller indices (1, 2) must win.
    data = Ragged.from_lists([[0, 1], [0, 2], [0, 3], [4, 5, 4], [5, 6], [1, 2, 3, 6]])
    histories = Ragged.from_lists([[0], [6, 0, 0], [], [3, 5]])
    model = ItemKNN(ItemKNNConfig(neighbours=2, recency=0.5)).fit(TrainingData(data, 7))
    expected = brute_force_itemknn(data, 7, 2, 0.5, histories)
    np.testing.assert_allclose(model.score(histories).numpy(), expected, rtol=1e-6)
    assert model.similarity[0].indices.tolist() == [1, 2]


@pytest.mark.parametrize("k, recency", [(3, 0.9), (100, 1.0)])
def test_itemknn_equals_brute_force_on_random_data(k, recency):
    data = sequences(2, users=40)
    histories = sequences(3, users=5)
    model = ItemKNN(ItemKNNConfig(neighbours=k, recency=recency)).fit(TrainingData(data, N_ITEMS))
    expected = brute_force_itemknn(data, N_ITEMS, k, recency, histories)
    np.testing.assert_allclose(model.score(histories).numpy(), expected, rtol=1e-5, atol=1e-7)


def test_itemknn_blocks_do_not_change_the_neighbours():
    from musicrec.models.itemknn import cosine_neighbours

    x = user_item_matrix(sequences(4), N_ITEMS)
    assert (cosine_neighbours(x, 4, block=3) != cosine_neighbours(x, 4, block=1000)).nnz == 0


def test_ease_equals_numpy_closed_form():
    data = sequences(5)
    model = EASE(EASEConfig(l2=3.0)).fit(TrainingData(data, N_ITEMS))
    x = dense_matrix(data, N_ITEMS, counts=False).astype(np.float64)
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(N_ITEMS))
    b = np.eye(N_ITEMS) - p @ np.diag(1.0 / np.diag(p))  # Steck (2019), eq. 8
    histories = Ragged.from_lists([[1, 1, 2], [], [24]])
    expected = dense_matrix(histories, N_ITEMS, counts=False) @ b
    np.testing.assert_allclose(model.score(histories).numpy(), expected, rtol=1e-4, atol=1e-6)
    assert np.allclose(np.diag(model.weights), 0)


def test_ease_refuses_a_catalogue_above_its_bound_naming_size_and_key():
    with pytest.raises(InputError, match=r"25 items, above model\.max_items=24"):
        EASE(EASEConfig(max_items=24)).fit(TrainingData(sequences(), N_ITEMS))


def test_decaypop_equals_the_formula_on_hand_made_timestamps():
    hour = 3600
    items = Ragged.from_lists([[0, 1, 0], [2, 0]])
    stamps = Ragged.from_lists([[0, 10 * hour, 48 * hour], [47 * hour, 24 * hour]])
    model = DecayPop(DecayPopConfig(decay_hours=24.0, tau=0.9)).fit(TrainingData(items, 4, stamps))
    # t_max = 48 h; item 0: ages 48 h, 0 h, 24 h; item 1: 38 h; item 2: 1 h; item 3: never.
    expected = [0.9**2 + 1 + 0.9, 0.9 ** (38 / 24), 0.9 ** (1 / 24), 0.0]
    scores = model.score(Ragged.from_lists([[1], []])).numpy()
    np.testing.assert_allclose(scores, [expected, expected], rtol=1e-6)


def test_decaypop_without_timestamps_says_what_it_needs():
    with pytest.raises(ValueError, match="decaypop needs the training timestamps"):
        DecayPop().fit(TrainingData(Ragged.from_lists([[0]]), 1))
