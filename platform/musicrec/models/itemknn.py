"""``itemknn``: cosine item–item neighbours from the user × item matrix (models.md).

similarity(i, j) = |U_i ∩ U_j| / sqrt(|U_i| · |U_j|) over the binary training matrix, i ≠ j;
each item keeps its ``neighbours`` most similar items (ties: the smaller item index first, so
the model is a function of the data alone). A history h_0..h_{L-1} (oldest first) scores item j
as Σ_p recency^(L−1−p) · sim_topk(h_p, j): the latest item weighs 1, one step earlier ``recency``,
and a repeated item adds the weight of every occurrence. Items outside every neighbour list score 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from musicrec.arrays import Ragged
from musicrec.config.models import ItemKNNConfig
from musicrec.models.base import Model, TrainingData, as_scores
from musicrec.models.matrix import user_item_matrix

if TYPE_CHECKING:
    import torch

# Similarity rows computed per block: bounds the memory of X_blockᵀ X on large catalogues.
BLOCK_ITEMS = 2048


def top_k_rows(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The ``k`` largest entries of every row (ties: smaller column first), as CSR with sorted columns."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rank = np.arange(len(order)) - matrix.indptr[rows[order]]
    keep = order[rank < k]
    out = sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape)
    out.sort_indices()
    return out


def cosine_neighbours(users_items: sp.csr_matrix, k: int, block: int = BLOCK_ITEMS) -> sp.csr_matrix:
    """Row i: the top-``k`` cosine neighbours of item i (float32, no self-similarity)."""
    x = users_items.astype(np.float64).tocsc()
    n = x.shape[1]
    norms = np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    xt = x.T.tocsr()
    parts = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        co = (xt[start:stop] @ x).tocsr()  # co-occurrence counts of items start..stop with all items
        co = sp.diags(inv[start:stop]) @ co @ sp.diags(inv)
        co = co.tocoo()
        off_diag = co.row + start != co.col
        co = sp.csr_matrix((co.data[off_diag], (co.row[off_diag], co.col[off_diag])), shape=(stop - start, n))
        co.eliminate_zeros()
        parts.append(top_k_rows(co, k))
    return sp.vstack(parts, format="csr").astype(np.float32) if parts else sp.csr_matrix((0, 0), dtype=np.float32)


def recency_weights(histories: Ragged, recency: float) -> np.ndarray:
    """recency ** (positions before the row's last element), aligned with ``histories.values``."""
    ends = np.repeat(histories.offsets[1:], histories.lengths)
    return recency ** (ends - 1 - np.arange(len(histories.values))).astype(np.float64)


class ItemKNN(Model):
    family = "itemknn"
    Config = ItemKNNConfig
    config: ItemKNNConfig
    similarity: sp.csr_matrix

    def fit(self, data: TrainingData) -> ItemKNN:
        self.n_items = data.n_items
        self.similarity = cosine_neighbours(user_item_matrix(data.items, data.n_items), self.config.neighbours)
        return self

    def score(self, histories: Ragged) -> torch.Tensor:
        weights = recency_weights(histories, self.config.recency)
        # Duplicates (a repeated item) are summed by the COO -> CSR conversion.
        query = sp.csr_matrix(
            (weights, (histories.row_ids(), histories.values)), shape=(len(histories), self.n_items)
        )
        return as_scores((query @ self.similarity).toarray().astype(np.float32))

    def state(self) -> dict[str, np.ndarray]:
        s = self.similarity
        return {"data": s.data, "indices": s.indices, "indptr": s.indptr}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.n_items = n = len(state["indptr"]) - 1
        self.similarity = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=(n, n))
