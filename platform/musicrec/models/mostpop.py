"""``mostpop``: score = number of training events of the item (docs/models.md)."""

from __future__ import annotations

import numpy as np
import torch

from musicrec.arrays import Ragged
from musicrec.config.models import MostPopConfig
from musicrec.models.base import Model, TrainingData


class MostPop(Model):
    family = "mostpop"
    Config = MostPopConfig
    counts: torch.Tensor

    def fit(self, data: TrainingData) -> MostPop:
        self.n_items = data.n_items
        self.counts = torch.from_numpy(np.bincount(data.items.values, minlength=data.n_items).astype(np.float32))
        return self

    def score(self, histories: Ragged) -> torch.Tensor:
        return self.counts.expand(len(histories), -1).clone()

    def state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts.numpy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.counts = torch.from_numpy(np.asarray(state["counts"], dtype=np.float32))
        self.n_items = len(self.counts)
