"""Ragged integer rows stored flat: the one array type that sequences, histories and targets share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Ragged:
    """Variable-length int64 rows stored flat: row i is ``values[offsets[i]:offsets[i+1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be a 1-d array starting at 0")
        if self.offsets[-1] != len(self.values) or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must be non-decreasing and end at len(values)")

    @classmethod
    def from_lists(cls, rows: Iterable[Sequence[int] | np.ndarray]) -> Ragged:
        arrays = [np.asarray(r, dtype=np.int64).reshape(-1) for r in rows]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return cls(values.astype(np.int64, copy=False), offsets)

    @classmethod
    def from_arrow(cls, column: pa.Array | pa.ChunkedArray) -> Ragged:
        """A list<int> column; null lists become empty rows."""
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        lengths, parts = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for chunk in chunks:
            chunk = chunk.fill_null(pa.scalar([], chunk.type)) if chunk.null_count else chunk
            offsets = chunk.offsets.to_numpy()
            # A sliced list array shares its parent's child array: rebase onto the slice.
            parts.append(chunk.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy(zero_copy_only=False))
            lengths.append(np.diff(offsets))
        row_lengths = np.concatenate(lengths)
        offsets = np.zeros(len(row_lengths) + 1, dtype=np.int64)
        np.cumsum(row_lengths, out=offsets[1:])
        # One pass per chunk that casts and copies, without first combining the chunks.
        return cls(np.concatenate(parts, dtype=np.int64), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_ids(self) -> np.ndarray:
        """Row index of every element of ``values``."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def rows(self, start: int, stop: int) -> Ragged:
        lo, hi = self.offsets[start], self.offsets[stop]
        return Ragged(self.values[lo:hi], self.offsets[start : stop + 1] - lo)

    def take(self, index: np.ndarray) -> Ragged:
        """Rows in the order of ``index`` (integer row numbers; -1 gives an empty row)."""
        index = np.asarray(index, dtype=np.int64)
        # With a virtual empty row appended at offsets[-1], index -1 selects it naturally.
        lengths = np.append(self.lengths, 0)[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Position of each output element inside its source row, shifted to the source start.
        within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        return Ragged(self.values[np.repeat(self.offsets[index], lengths) + within], offsets)

    def keep(self, mask: np.ndarray) -> Ragged:
        """Elements where ``mask`` (aligned with ``values``) is true, rows preserved."""
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.row_ids()[mask], minlength=len(self)), out=offsets[1:])
        return Ragged(self.values[mask], offsets)

    def distinct(self) -> Ragged:
        """Each row's distinct items, ascending."""
        rows = self.row_ids()
        order = np.lexsort((self.values, rows))
        v, r = self.values[order], rows[order]
        first = np.ones(len(v), dtype=bool)
        first[1:] = (v[1:] != v[:-1]) | (r[1:] != r[:-1])
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.bincount(r[first], minlength=len(self)), out=offsets[1:])
        return Ragged(v[first], offsets)

    def to_lists(self) -> list[np.ndarray]:
        return [self[i] for i in range(len(self))]


def as_ragged(rows: Ragged | Iterable[Sequence[int] | np.ndarray]) -> Ragged:
    return rows if isinstance(rows, Ragged) else Ragged.from_lists(rows)
