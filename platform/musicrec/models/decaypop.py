"""``decaypop``: time-decayed popularity (models.md), Σ over an item's training events of
``tau ** ((t_max − t) / (decay_hours · 3600))``, with ``t_max`` the latest training timestamp."""

from __future__ import annotations

import numpy as np
import torch

from musicrec.arrays import Ragged
from musicrec.config.models import DecayPopConfig
from musicrec.models.base import Model, TrainingData


class DecayPop(Model):
    family = "decaypop"
    Config = DecayPopConfig
    config: DecayPopConfig
    scores: torch.Tensor
    uses_timestamps = True

    def fit(self, data: TrainingData) -> DecayPop:
        if data.timestamps is None:
            raise ValueError("decaypop needs the training timestamps (the `timestamps` column of `sequences`)")
        self.n_items = data.n_items
        stamps = data.timestamps.values.astype(np.float64)
        age_hours = (stamps.max(initial=0.0) - stamps) / 3600.0
        # float64 sums: a popular item has millions of terms.
        weights = self.config.tau ** (age_hours / self.config.decay_hours)
        totals = np.bincount(data.items.values, weights=weights, minlength=data.n_items)
        self.scores = torch.from_numpy(totals.astype(np.float32))
        return self

    def score(self, histories: Ragged) -> torch.Tensor:
        return self.scores.expand(len(histories), -1).clone()

    def state(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores.numpy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.scores = torch.from_numpy(np.asarray(state["scores"], dtype=np.float32))
        self.n_items = len(self.scores)
