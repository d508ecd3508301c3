"""``ease``: EASE (Steck 2019), the closed-form item–item model (models.md, "later").

G = XᵀX + l2·I over the binary training matrix, P = G⁻¹, B = I − P·diag(1/diag P) (zero
diagonal); a history scores items by its binary row times B. B is a dense item × item matrix,
so the family refuses catalogues above ``model.max_items``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from musicrec.arrays import Ragged
from musicrec.config.models import EASEConfig
from musicrec.errors import InputError
from musicrec.models.base import Model, TrainingData, as_scores
from musicrec.models.matrix import user_item_matrix

if TYPE_CHECKING:
    import torch


class EASE(Model):
    family = "ease"
    Config = EASEConfig
    config: EASEConfig
    weights: np.ndarray

    def fit(self, data: TrainingData) -> EASE:
        if data.n_items > self.config.max_items:
            raise InputError(
                f"ease: the catalogue has {data.n_items} items, above model.max_items={self.config.max_items} "
                f"(a dense {data.n_items}² matrix); raise model.max_items or choose another family"
            )
        self.n_items = n = data.n_items
        x = user_item_matrix(data.items, n)
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices(n)] += self.config.l2
        p = np.linalg.inv(gram)
        b = p / (-np.diag(p))
        b[np.diag_indices(n)] = 0.0
        self.weights = b.astype(np.float32)
        return self

    def score(self, histories: Ragged) -> torch.Tensor:
        rows = user_item_matrix(histories, self.n_items)
        return as_scores(np.asarray(rows @ self.weights, dtype=np.float32))

    def state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = np.asarray(state["weights"], dtype=np.float32)
        self.n_items = len(self.weights)
