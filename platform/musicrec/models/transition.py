"""``transition``: a first-order Markov scorer over item -> next item counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from musicrec.arrays import Ragged
from musicrec.config.models import TransitionConfig
from musicrec.models.base import Model, TrainingData, as_scores

if TYPE_CHECKING:
    import torch


class Transition(Model):
    """Counts of item -> next item in the training sequences.

    A history is scored by the transition row of its last item plus ``backoff`` times the
    normalised popularity, so items never seen after that item (and empty histories)
    are ordered by popularity rather than by id. The back-off stays below 1, the
    smallest non-zero transition count, so it never reorders observed transitions.
    """

    family = "transition"
    Config = TransitionConfig
    backoff: float = 1e-6
    matrix: sp.csr_matrix
    popularity: np.ndarray

    def fit(self, data: TrainingData) -> Transition:
        n, flat = data.n_items, data.items
        self.n_items = n
        rows = flat.row_ids()
        consecutive = rows[1:] == rows[:-1]
        src, dst = flat.values[:-1][consecutive], flat.values[1:][consecutive]
        # Duplicate (src, dst) entries are summed by the COO -> CSR conversion.
        self.matrix = sp.coo_matrix((np.ones(len(src), dtype=np.float32), (src, dst)), shape=(n, n)).tocsr()
        pop = np.bincount(flat.values, minlength=n).astype(np.float64)
        self.popularity = (self.backoff * pop / max(pop.max(initial=0.0), 1.0)).astype(np.float32)
        return self

    def score(self, histories: Ragged) -> torch.Tensor:
        out = np.tile(self.popularity, (len(histories), 1))
        with_last = np.flatnonzero(histories.lengths > 0)
        if len(with_last):
            last = histories.values[histories.offsets[with_last + 1] - 1]
            out[with_last] += self.matrix[last].toarray()
        return as_scores(out)

    def state(self) -> dict[str, np.ndarray]:
        m = self.matrix
        return {"data": m.data, "indices": m.indices, "indptr": m.indptr, "popularity": self.popularity}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.popularity = np.asarray(state["popularity"], dtype=np.float32)
        self.n_items = n = len(self.popularity)
        self.matrix = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=(n, n))
