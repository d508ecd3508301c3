"""The task candidate filters on top of a faiss index (docs/models.md, "Retrieval"; docs/tasks.md §5).

- A familiar task ("only") ranks just the user's distinct history items: they are scored directly,
  no index involved.
- A discovery task ("exclude") over-fetches from the index and drops the history. The first fetch
  is ``K + margin`` plus the batch's median history length; a user left with fewer than
  ``K + margin`` candidates is fetched again with room for the whole history, so a long history
  still leaves K items.
- A task without filter takes the index results as they are.

Every candidate is then re-scored as the model scores it (query · item vector) and ranked by the
evaluator's exact top-K (:func:`musicrec.evaluate.ranking.topk`: ties by item index ascending). With an
exact index the result is the evaluator's ranking: the ``margin`` extra candidates absorb the float
rounding between faiss's scores and the model's, and a user whose K-th score is not clearly above the
lowest score fetched (a tie that may reach past the fetched items, e.g. an all-zero query) is ranked
over the full catalogue instead.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from musicrec.arrays import Ragged
from musicrec.config.schema import RetrievalConfig
from musicrec.evaluate.ranking import task_filter, topk
from musicrec.retrieval.index import configure_search, is_exact

# Candidate vectors gathered per chunk of users: (users, candidates, d) float32 stays near 256 MiB.
GATHER_BUDGET_ELEMENTS = 2**26
# Relative distance from the lowest fetched score under which the K-th score counts as a possible tie.
TIE_TOLERANCE = 1e-4


def search(
    index: faiss.Index,
    item_emb: np.ndarray,
    queries: np.ndarray,
    history: Ragged,
    task: str,
    k: int,
    margin: int = 16,
    settings: RetrievalConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k dense item indices (n, k; padded -1) and their float32 scores (padded -inf) under the task's filter.

    ``queries`` (n, d) and ``item_emb`` (n_items, d) are the model's vectors; ``history`` (n rows) the
    users' known history items in dense indices, which the filter uses. ``settings`` (the retrieval
    config) sets the index's search parameters for the number of candidates fetched.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) != len(history):
        raise ValueError(f"{len(queries)} queries but {len(history)} histories")
    kind = task_filter(task)
    if kind == "only":
        cand = _padded(history.distinct())
        return _rank(item_emb, queries, cand, k)
    drop = history.distinct() if kind == "exclude" else Ragged.from_lists([[]] * len(history))
    n_items = len(item_emb)
    # Room for a typical history first; the users with longer ones are fetched again below.
    first = min(n_items, k + margin + (int(np.median(drop.lengths)) if len(drop) else 0))
    cand, floor = _fetch(index, queries, drop, first, settings)
    # Users left short of K + margin by the dropped history: fetch again with room for all of it.
    short = np.flatnonzero(((cand >= 0).sum(axis=1) < k + margin) & (first < n_items))
    if len(short):
        again = min(n_items, k + margin + int(drop.lengths[short].max()))
        more, more_floor = _fetch(index, queries[short], drop.take(short), again, settings)
        cand = _widen(cand, again)
        cand[short] = more
        floor[short] = more_floor
    items, scores = _rank(item_emb, queries, cand, k)
    kth = scores[:, -1]  # -inf where a row has fewer than k candidates
    if is_exact(index):
        # Items not fetched score at most the floor: a K-th score near it may tie with one of them.
        unsafe = kth <= floor + TIE_TOLERANCE * np.maximum(np.abs(floor), 1.0)
    else:
        # An approximate index may return fewer than asked for (IVF's probed lists ran out).
        unsafe = kth == -np.inf
    rows = np.flatnonzero(unsafe & (cand.shape[1] < n_items))
    if len(rows):
        items[rows], scores[rows] = _full(item_emb, queries[rows], drop.take(rows), k)
    return items, scores


def _fetch(
    index: faiss.Index, queries: np.ndarray, drop: Ragged, fetch: int, settings: RetrievalConfig | None
) -> tuple[np.ndarray, np.ndarray]:
    """The index's top ``fetch`` of each query minus its ``drop`` items (-1 where dropped or missing),
    and the lowest score the index returned per query (with an exact index, what any item not fetched scores at most)."""
    if settings is not None:
        configure_search(index, settings, fetch)
    scores, ids = index.search(queries, fetch)
    valid = ids >= 0
    floor = np.where(valid, scores, np.inf).min(axis=1, initial=np.inf).astype(np.float32)
    if len(drop.values):
        # One key per (user, item): membership of every candidate in its user's history at once.
        n_items = int(max(ids.max(initial=0), drop.values.max(initial=0))) + 1
        hist_keys = drop.row_ids() * n_items + drop.values
        keys = np.arange(len(ids))[:, None] * n_items + ids
        ids = np.where(valid & ~np.isin(keys, hist_keys), ids, -1)
    return ids.astype(np.int64), floor


def _widen(cand: np.ndarray, width: int) -> np.ndarray:
    if cand.shape[1] >= width:
        return cand
    return np.pad(cand, ((0, 0), (0, width - cand.shape[1])), constant_values=-1)


def _padded(rows: Ragged) -> np.ndarray:
    """Rows as a (n, width) matrix padded with -1."""
    width = max(int(rows.lengths.max(initial=0)), 1)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    row_ids = rows.row_ids()
    out[row_ids, np.arange(len(rows.values)) - rows.offsets[:-1][row_ids]] = rows.values
    return out


def _rank(item_emb: np.ndarray, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among each row's candidates (dense indices, -1 = none), scored as the model scores."""
    # Candidates ascending in each row, so that a column tie broken by column is broken by item index.
    cand = np.sort(np.where(cand >= 0, cand, np.iinfo(np.int64).max), axis=1)
    cand[cand == np.iinfo(np.int64).max] = -1
    n, width = cand.shape
    scores = np.empty((n, width), dtype=np.float32)
    chunk = max(1, GATHER_BUDGET_ELEMENTS // max(width * item_emb.shape[1], 1))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = cand[start:stop]
        vectors = item_emb[block.clip(min=0)]
        scores[start:stop] = np.matmul(vectors, queries[start:stop, :, None])[..., 0]
    scores[cand < 0] = -np.inf
    cols, values = topk(torch.from_numpy(scores), k)
    cols_np = cols.numpy()
    items = np.where(cols_np >= 0, np.take_along_axis(cand, cols_np.clip(min=0), axis=1), -1)
    return items, values.numpy()


def _full(item_emb: np.ndarray, queries: np.ndarray, drop: Ragged, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over the whole catalogue without ``drop``: the fallback for a possible tie at the boundary."""
    scores = torch.from_numpy(queries @ item_emb.T)
    items, values = topk(scores, k, exclude=drop if len(drop.values) else None, inplace=True)
    return items.numpy(), values.numpy()
