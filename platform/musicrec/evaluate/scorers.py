"""The scoring interface used by evaluation, two reference scorers, and the item index.

Scorers work on dense item indices 0..n_items-1 (see :class:`ItemIndex`); every model
family implements the same two methods, so the runners and the candidate filters
treat them all alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch

from musicrec.evaluate.metrics import Ragged, as_ragged


class Scorer(Protocol):
    def fit(self, train_sequences: Sequence[np.ndarray], n_items: int) -> Scorer:
        """Learn from ordered training sequences of dense item indices."""
        ...

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """A fresh (len(histories), n_items) float32 tensor; callers may modify it in place."""
        ...


@dataclass(frozen=True)
class ItemIndex:
    """Raw item ids <-> dense indices; dense order is id order, so index ties = id ties."""

    ids: np.ndarray

    @classmethod
    def from_items(cls, items: Iterable[int] | np.ndarray) -> ItemIndex:
        return cls(np.unique(np.asarray(items, dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.ids)

    def to_dense(self, raw: np.ndarray) -> np.ndarray:
        """Dense index of each raw id, -1 for ids the model does not know."""
        raw = np.asarray(raw, dtype=np.int64)
        pos = np.searchsorted(self.ids, raw).clip(max=max(len(self.ids) - 1, 0))
        known = (self.ids[pos] == raw) if len(self.ids) else np.zeros(raw.shape, dtype=bool)
        return np.where(known, pos, -1)

    def to_raw(self, dense: np.ndarray) -> np.ndarray:
        """Raw id of each dense index; -1 (padding) stays -1."""
        dense = np.asarray(dense, dtype=np.int64)
        return np.where(dense >= 0, self.ids[dense.clip(min=0)] if len(self.ids) else -1, -1)

    def map_rows(self, rows: Ragged | Iterable[Sequence[int] | np.ndarray]) -> tuple[Ragged, int]:
        """Rows in dense indices with unknown ids dropped, and how many were dropped."""
        rows = as_ragged(rows)
        dense = self.to_dense(rows.values)
        known = dense >= 0
        return Ragged(dense, rows.offsets).keep(known), int((~known).sum())


def rows_by_key(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each ``wanted`` key among the distinct ``keys`` (any order), -1 where absent."""
    order = np.argsort(keys)
    pos = ItemIndex(np.asarray(keys, dtype=np.int64)[order]).to_dense(wanted)
    return np.where(pos >= 0, order[pos.clip(min=0)], -1)


def _flat(sequences: Sequence[np.ndarray], n_items: int) -> Ragged:
    flat = as_ragged(sequences)
    if len(flat.values) and (flat.values.min() < 0 or flat.values.max() >= n_items):
        raise ValueError(f"training items must be dense indices in 0..{n_items - 1}")
    return flat


class MostPop:
    """Score = number of training events of the item (spec models.md, ``mostpop``)."""

    counts: torch.Tensor

    def fit(self, train_sequences: Sequence[np.ndarray], n_items: int) -> MostPop:
        flat = _flat(train_sequences, n_items)
        self.counts = torch.from_numpy(np.bincount(flat.values, minlength=n_items).astype(np.float32))
        return self

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self.counts.expand(len(histories), -1).clone()


class Transition:
    """First-order Markov scorer: counts of item -> next item in the training sequences.

    A history is scored by the transition row of its last item plus ``backoff`` times the
    normalised popularity, so items never seen after that item (and empty histories)
    are ordered by popularity rather than by id. The back-off stays below 1, the
    smallest non-zero transition count, so it never reorders observed transitions.
    """

    backoff: float = 1e-6
    matrix: sp.csr_matrix
    popularity: np.ndarray

    def fit(self, train_sequences: Sequence[np.ndarray], n_items: int) -> Transition:
        flat = _flat(train_sequences, n_items)
        rows = flat.row_ids()
        consecutive = rows[1:] == rows[:-1]
        src, dst = flat.values[:-1][consecutive], flat.values[1:][consecutive]
        # Duplicate (src, dst) entries are summed by the COO -> CSR conversion.
        self.matrix = sp.coo_matrix(
            (np.ones(len(src), dtype=np.float32), (src, dst)), shape=(n_items, n_items)
        ).tocsr()
        pop = np.bincount(flat.values, minlength=n_items).astype(np.float64)
        self.popularity = (self.backoff * pop / max(pop.max(initial=0.0), 1.0)).astype(np.float32)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        out = np.tile(self.popularity, (len(histories), 1))
        last = np.array([h[-1] if len(h) else -1 for h in histories], dtype=np.int64)
        with_last = np.flatnonzero(last >= 0)
        if len(with_last):
            out[with_last] += self.matrix[last[with_last]].toarray()
        return torch.from_numpy(out)
