"""The one interface every model family implements (docs/models.md: fit, score, embeddings, save/load).

A model works on dense item indices 0..n_items-1 (:class:`~musicrec.models.items.ItemIndex`
maps raw ids); the candidate filters, top-K, metrics and batch inference are written once,
outside the families, and treat every family alike.

Persistence is split so that no family writes files itself: a family exposes its learnt
state as named numpy arrays (``state``/``load_state``) and :mod:`musicrec.models.fitted`
stores them with the config and the item mapping. Arrays, not pickles, so that a saved
model is safe to load and readable without the class that wrote it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np
from pydantic import BaseModel

from musicrec.arrays import Ragged, as_ragged

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainingData:
    """Training sequences of one (protocol, sequence name, k): one row per user, canonical order,
    dense item indices; ``timestamps`` (seconds) aligned element for element when known."""

    items: Ragged
    n_items: int
    timestamps: Ragged | None = None

    def __post_init__(self) -> None:
        values = self.items.values
        if len(values) and (values.min() < 0 or values.max() >= self.n_items):
            raise ValueError(f"training items must be dense indices in 0..{self.n_items - 1}")
        if self.timestamps is not None and not np.array_equal(self.timestamps.offsets, self.items.offsets):
            raise ValueError("timestamps must have one value per training item")

    @classmethod
    def of(cls, sequences, n_items: int, timestamps=None) -> TrainingData:
        return cls(as_ragged(sequences), n_items, None if timestamps is None else as_ragged(timestamps))


class Model(ABC):
    """A model family. Subclasses set ``family`` and, when they have settings, ``Config``."""

    family: ClassVar[str]
    Config: ClassVar[type[BaseModel] | None] = None
    # Whether ``fit`` reads ``TrainingData.timestamps``: a job reads that column only for those that do.
    uses_timestamps: ClassVar[bool] = False

    def __init__(self, config: BaseModel | None = None, seed: int = 0) -> None:
        if config is None and self.Config is not None:
            config = self.Config()
        self.config = config
        self.seed = seed
        self.n_items = 0

    @abstractmethod
    def fit(self, data: TrainingData) -> Self:
        """Learn from ``data``; sets ``n_items``."""

    @abstractmethod
    def score(self, histories: Ragged) -> torch.Tensor:
        """A fresh (len(histories), n_items) float32 tensor of scores, one row per input history
        (dense indices, oldest first); callers may modify it in place."""

    def item_embeddings(self) -> np.ndarray | None:
        """(n_items, d) float32 item vectors such that ``score = query_embeddings @ item_embeddings.T``,
        for families that have them (retrieval indexes them); None otherwise."""
        return None

    def query_embeddings(self, histories: Ragged) -> np.ndarray | None:
        """(len(histories), d) float32 query vectors matching :meth:`item_embeddings`, or None."""
        return None

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """The learnt state as named arrays (what :meth:`load_state` restores)."""

    @abstractmethod
    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned; ``n_items`` included."""

    def config_dict(self) -> dict:
        return self.config.model_dump(mode="json") if self.config is not None else {}


def as_scores(array: np.ndarray) -> torch.Tensor:
    """A numpy score matrix as the tensor :meth:`Model.score` returns. torch is imported here, at the
    first scoring: the Ray task that fits a matrix-factorisation family never pays its import."""
    import torch

    return torch.from_numpy(array)
