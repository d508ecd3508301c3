"""``als``: implicit-feedback ALS (Hu, Koren, Volinsky) through ``implicit`` on the CPU (models.md).

The matrix is user × item over the training sequences (binary or counts, config), so ALS on
``disc_track`` sees only discoveries. An evaluation user is not a training user: their factors
are recomputed from their input history with implicit's own ``recalculate_user`` (an exact
least-squares solve against the fixed item factors), and score = user factors · item factors.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from musicrec.arrays import Ragged
from musicrec.config.models import ALSConfig
from musicrec.models.base import Model, TrainingData, as_scores
from musicrec.models.matrix import user_item_matrix

if TYPE_CHECKING:
    import torch


class ALS(Model):
    family = "als"
    Config = ALSConfig
    config: ALSConfig

    def _implicit(self):
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        with threadpool_limits(1, "blas"):  # else implicit warns about BLAS's thread pool
            return AlternatingLeastSquares(
                factors=c.factors,
                regularization=c.regularization,
                alpha=c.alpha,
                iterations=c.iterations,
                use_cg=c.use_cg,
                num_threads=c.num_threads,
                random_state=self.seed,
                dtype=np.float32,
            )

    def matrix(self, data: TrainingData):
        return user_item_matrix(data.items, data.n_items, self.config.values, self.config.num_threads or os.cpu_count())

    def fit(self, data: TrainingData) -> ALS:
        self.n_items = data.n_items
        self.mf = self._implicit()
        # implicit's advice: its own threads, not BLAS's (a BLAS thread pool inside them thrashes).
        with threadpool_limits(1, "blas"):
            self.mf.fit(self.matrix(data), show_progress=False)
        return self

    def item_embeddings(self) -> np.ndarray:
        return self.mf.item_factors

    def query_embeddings(self, histories: Ragged) -> np.ndarray:
        rows = user_item_matrix(histories, self.n_items, self.config.values)
        with threadpool_limits(1, "blas"):
            return self.mf.recalculate_user(np.arange(len(histories)), rows)

    def score(self, histories: Ragged) -> torch.Tensor:
        return as_scores(self.query_embeddings(histories) @ self.mf.item_factors.T)

    def state(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.mf.item_factors}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mf = self._implicit()
        self.mf.item_factors = np.ascontiguousarray(state["item_factors"], dtype=np.float32)
        self.n_items = len(self.mf.item_factors)
