"""Retrieval: a faiss index of a model's item embeddings plus the task filter gives the evaluator's
exact ranking item for item (T1–T4); index kinds and their persistence; the benchmark's recall."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from musicrec.arrays import Ragged
from musicrec.bench.retrieval import bench_retrieval, recall_at
from musicrec.config.models import ALSConfig
from musicrec.config.schema import RetrievalConfig
from musicrec.contract import task as task_of
from musicrec.evaluate.protocols import model_inputs, recommend
from musicrec.models import family_class, fit_model
from musicrec.retrieval.index import build_index, describe, load_index, save_index
from musicrec.retrieval.retriever import Retriever

N_TRACKS = 1200
ARTIST_OF = np.arange(N_TRACKS) // 6  # 200 artists
K = 50


def listening(n_users: int, seed: int) -> list[np.ndarray]:
    """Users in 12 taste groups, each over its own stretch of the catalogue with a popular head;
    some histories are longer than the catalogue share K + margin leaves (the refetch path), one empty."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(700, 900)) if u % 17 == 0 else int(rng.integers(3, 120))
        start = (u % 12) * 100
        rows.append((start + rng.zipf(1.4, n)) % N_TRACKS)
    rows[5] = np.zeros(0, dtype=np.int64)
    return rows


@pytest.fixture(scope="module")
def models():
    """ALS on track histories (T1/T2) and on the same histories as artists (T3/T4), and held-out users."""
    train = listening(400, seed=0)
    users = listening(160, seed=1)
    out = {}
    for domain, to_domain in (("track", lambda r: r), ("artist", lambda r: ARTIST_OF[r])):
        model = family_class("als")(ALSConfig(factors=16, iterations=4, num_threads=1), seed=0)
        fitted = fit_model(f"als[lh_{domain}]", model, [to_domain(r) for r in train], sequence=f"lh_{domain}")
        # A held-out history may hold ids the model never saw (dropped from its input and filter).
        out[domain] = (fitted, Ragged.from_lists([to_domain(r) for r in users] + [[10_000_000, 3]]))
    return out


@pytest.mark.parametrize("task", ["T1", "T2", "T3", "T4"])
def test_exact_index_with_the_task_filter_is_the_evaluators_ranking(models, task):
    fitted, history = models[task_of(task).domain]
    retriever = Retriever(fitted, build_index(fitted.model.item_embeddings(), RetrievalConfig()), RetrievalConfig())
    assert describe(retriever.index)["kind"] == "exact"
    items, scores = retriever.top_k(history, task, K)
    want_items, want_scores = recommend(fitted, history, task, K)
    np.testing.assert_array_equal(items, want_items)
    kept = want_items >= 0
    np.testing.assert_allclose(scores[kept], want_scores[kept], rtol=1e-5, atol=1e-6)
    assert np.all(scores[~kept] == -np.inf)
    n_known = len(fitted.items)
    for i in range(len(history)):
        known = set(fitted.items.to_dense(history[i]).tolist()) - {-1}
        got = items[i][items[i] >= 0]
        if task_of(task).filter == "exclude":
            # Every user gets K new items, long histories too (over-fetched again, not cut short).
            assert len(got) == min(K, n_known - len(known)) and not set(fitted.items.to_dense(got)) & known
        else:
            # A familiar list is the user's distinct known history items, at most K of them.
            assert len(got) == min(K, len(known)) and set(fitted.items.to_dense(got)) <= known


def test_a_user_with_a_zero_query_gets_the_lowest_ids_as_the_evaluator_does(models):
    # Every score ties at 0: the evaluator's tie rule (lowest item index first) beyond any fetched set.
    fitted, _ = models["track"]
    item_emb = fitted.model.item_embeddings()
    index = build_index(item_emb, RetrievalConfig())
    from musicrec.retrieval.filters import search

    history = Ragged.from_lists([[0, 2, 5]])
    items, scores = search(index, item_emb, np.zeros((1, item_emb.shape[1]), np.float32), history, "T1", 5)
    assert items.tolist() == [[1, 3, 4, 6, 7]] and scores.tolist() == [[0.0] * 5]


def test_an_approximate_index_still_gives_k_new_items_scored_as_the_model_scores_them(models):
    fitted, history = models["track"]
    # One list probed of 30: candidates run out for many users, who then fall back to exact ranking.
    settings = RetrievalConfig(approximate_from=1, nlist=30, nprobe=1)
    retriever = Retriever(fitted, build_index(fitted.model.item_embeddings(), settings), settings)
    assert describe(retriever.index)["kind"] == "ivf"
    items, scores = retriever.top_k(history, "T1", K)
    exact_items, _ = recommend(fitted, history, "T1", K)
    model_scores = fitted.model.score(model_inputs(fitted, history)).numpy()
    for i in range(len(history)):
        known = set(fitted.items.to_dense(history[i]).tolist()) - {-1}
        dense = fitted.items.to_dense(items[i])
        assert len(dense) == K and not set(dense.tolist()) & known
        np.testing.assert_allclose(scores[i], model_scores[i, dense], rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(scores[i]) <= 0)
    assert 0.5 < recall_at(items, exact_items) < 1.0


def test_a_family_without_embeddings_is_ranked_exactly_without_an_index():
    users = listening(30, seed=2)
    fitted = fit_model("mostpop[lh_track]", family_class("mostpop")(), users)
    retriever = Retriever(fitted, None, RetrievalConfig())
    history = Ragged.from_lists(users)
    for task in ("T1", "T2"):
        got, want = retriever.top_k(history, task, 10), recommend(fitted, history, task, 10)
        np.testing.assert_array_equal(got[0], want[0])


def test_index_kind_and_parameters_follow_the_config_and_survive_saving(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    assert describe(build_index(vectors, RetrievalConfig(approximate_from=3001)))["kind"] == "exact"
    ivf = build_index(vectors, RetrievalConfig(approximate_from=3000, nlist=30, nprobe=4))
    assert isinstance(ivf, faiss.IndexIVFFlat) and (ivf.nlist, ivf.nprobe) == (30, 4)
    hnsw = build_index(vectors, RetrievalConfig(approximate_from=10, kind="hnsw", hnsw_m=8, ef_search=40))
    assert describe(hnsw) == {"kind": "hnsw", "n_items": 3000, "dim": 16, "m": 8, "ef_construction": 128, "ef_search": 40}
    # Probing every list is exhaustive: the IVF index then answers exactly as brute force does.
    ivf.nprobe = ivf.nlist
    brute = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    assert recall_at(ivf.search(queries, 10)[1], brute) == 1.0
    # Saved and loaded, the index answers the same; search parameters are the loading config's.
    loaded = load_index(save_index(ivf, tmp_path / "index"), RetrievalConfig(nprobe=7))
    assert loaded.nprobe == 7
    loaded.nprobe = ivf.nlist
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], ivf.search(queries, 10)[1])


def test_recall_counts_the_share_of_the_exact_top_k_found():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, 1], [8, -1, -1, -1]])
    assert recall_at(approx, exact) == pytest.approx((3 / 4 + 1 / 4) / 2)


def test_the_retrieval_benchmark_runs_on_a_tiny_catalogue():
    exhaustive = bench_retrieval(n_items=2000, n_queries=50, dim=8, k=10, rounds=1,
                                 settings=RetrievalConfig(nlist=10, nprobe=10))
    assert exhaustive["index.kind"] == "ivf" and exhaustive["recall_at_10"] == 1.0
    one_list = bench_retrieval(n_items=2000, n_queries=50, dim=8, k=10, rounds=1,
                               settings=RetrievalConfig(nlist=10, nprobe=1))
    assert one_list["recall_at_10"] < 1.0
    assert exhaustive["exact_qps"] > 0 and exhaustive["qps_ratio"] == pytest.approx(
        exhaustive["approx_qps"] / exhaustive["exact_qps"]
    )


def test_the_retrieval_and_recommend_sections_are_validated():
    from musicrec.config import load_config
    from musicrec.errors import ConfigError

    config = load_config(overrides=["retrieval.kind=hnsw", "recommend.tasks=[T3,T4]", "recommend.k=5"])
    assert (config.retrieval.kind, config.recommend.tasks, config.recommend.k) == ("hnsw", ["T3", "T4"], 5)
    for bad, key in (("retrieval.kind=lsh", "retrieval.kind"), ("recommend.tasks=[next_track]", "recommend.tasks"),
                     ("recommend.k=0", "recommend.k"), ("retrieval.approximate_from=0", "retrieval.approximate_from")):
        with pytest.raises(ConfigError, match=key):
            load_config(overrides=[bad])
