"""``bpr``: Bayesian Personalized Ranking through ``implicit`` on the CPU (models.md).

implicit's BPR keeps an item bias as the last item-factor column (the user's last column is 1)
and has no ``recalculate_user``. An evaluation user is folded in as the mean of their history's
item vectors (bias column excluded) with 1 in the bias slot, so score = mean history vector ·
item vector + item bias; an empty history ranks by the learnt bias alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from musicrec.arrays import Ragged
from musicrec.config.models import BPRConfig
from musicrec.models.base import Model, TrainingData, as_scores
from musicrec.models.matrix import user_item_matrix

if TYPE_CHECKING:
    import torch


class BPR(Model):
    family = "bpr"
    Config = BPRConfig
    config: BPRConfig

    def _implicit(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        with threadpool_limits(1, "blas"):  # else implicit warns about BLAS's thread pool
            return BayesianPersonalizedRanking(
                factors=c.factors,
                learning_rate=c.learning_rate,
                regularization=c.regularization,
                iterations=c.iterations,
                num_threads=c.num_threads,
                verify_negative_samples=c.verify_negative_samples,
                random_state=self.seed,
                dtype=np.float32,
            )

    def matrix(self, data: TrainingData) -> sp.csr_matrix:
        return user_item_matrix(data.items, data.n_items, "binary")

    def fit(self, data: TrainingData) -> BPR:
        self.n_items = data.n_items
        self.mf = self._implicit()
        # implicit's advice: its own threads, not BLAS's (a BLAS thread pool inside them thrashes).
        with threadpool_limits(1, "blas"):
            self.mf.fit(self.matrix(data), show_progress=False)
        return self

    def item_embeddings(self) -> np.ndarray:
        return self.mf.item_factors

    def query_embeddings(self, histories: Ragged) -> np.ndarray:
        items = self.mf.item_factors
        counts = histories.lengths.astype(np.float64)
        # Row-normalised history matrix: each row averages its items' vectors.
        weights = np.repeat(np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0), histories.lengths)
        mean = sp.csr_matrix(
            (weights, (histories.row_ids(), histories.values)), shape=(len(histories), self.n_items)
        ) @ items[:, :-1].astype(np.float64)
        return np.hstack([mean, np.ones((len(histories), 1))]).astype(np.float32)

    def score(self, histories: Ragged) -> torch.Tensor:
        return as_scores(self.query_embeddings(histories) @ self.mf.item_factors.T)

    def state(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.mf.item_factors}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mf = self._implicit()
        self.mf.item_factors = np.ascontiguousarray(state["item_factors"], dtype=np.float32)
        self.n_items = len(self.mf.item_factors)
