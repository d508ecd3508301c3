"""Raw item ids <-> the dense indices 0..n_items-1 that every model works on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from musicrec.arrays import Ragged, as_ragged


@dataclass(frozen=True)
class ItemIndex:
    """Raw item ids <-> dense indices; dense order is id order, so index ties = id ties."""

    ids: np.ndarray

    @classmethod
    def from_items(cls, items: Iterable[int] | np.ndarray) -> ItemIndex:
        return cls(np.unique(np.asarray(items, dtype=np.int64)))

    @classmethod
    def indexing(cls, raw: np.ndarray) -> tuple[ItemIndex, np.ndarray]:
        """The index of the distinct ids in ``raw``, and ``raw`` in its dense indices: what
        ``from_items`` then ``to_dense`` give, in one pass. Ids that fit a lookup table of a few
        bytes per event (catalogue ids are) skip the sort: O(n) instead of O(n log n), seconds
        on tens of millions of events."""
        raw = np.asarray(raw, dtype=np.int64)
        if not len(raw) or raw.min() < 0 or raw.max() > 4 * len(raw) + 2**20:
            ids, dense = np.unique(raw, return_inverse=True)
            return cls(ids), dense.reshape(-1).astype(np.int64)
        present = np.zeros(int(raw.max()) + 1, dtype=bool)
        present[raw] = True
        dense_of = np.cumsum(present, dtype=np.int64) - 1
        return cls(np.flatnonzero(present).astype(np.int64)), dense_of[raw]

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
