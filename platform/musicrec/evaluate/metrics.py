"""Exact ranking metrics of spec metrics.md, vectorised over users.

Rankings arrive as an int64 array ``ranked`` of shape (n_users, K), best first, padded
with -1 where a user has fewer than K candidates; ground truth arrives as a
:class:`Ragged` of item lists (duplicates allowed: the metrics use the distinct set).
Padding never counts as a hit. Users whose ground truth is empty are not evaluated and
are counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

METRICS: tuple[str, ...] = ("hr", "recall", "precision", "ndcg", "map", "mrr")


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
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
        column = column.fill_null(pa.scalar([], column.type)) if column.null_count else column
        offsets = column.offsets.to_numpy().astype(np.int64)
        # A sliced list array shares its parent's child array: rebase onto the slice.
        values = column.values.slice(offsets[0], offsets[-1] - offsets[0])
        return cls(values.to_numpy(zero_copy_only=False).astype(np.int64), offsets - offsets[0])

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


@dataclass(frozen=True)
class MetricResult:
    """Per-user values for the evaluated users only (``evaluated`` marks them among all users)."""

    per_user: dict[tuple[str, int], np.ndarray]
    evaluated: np.ndarray
    skipped_empty_targets: int

    @property
    def n_evaluated(self) -> int:
        return int(self.evaluated.sum())

    def mean(self) -> dict[tuple[str, int], float]:
        """Mean over evaluated users; NaN when nobody was evaluated."""
        return {key: float(v.mean()) if len(v) else float("nan") for key, v in self.per_user.items()}


def check_ranked(ranked: np.ndarray) -> np.ndarray:
    """Validate a padded ranking array; raise on duplicates, which are a bug and not a tie."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked must be a 2-d integer array, got shape {ranked.shape} dtype {ranked.dtype}")
    ranked = ranked.astype(np.int64, copy=False)
    if ranked.size and ranked.min() < -1:
        raise ValueError("ranked holds a negative item other than the padding value -1")
    s = np.sort(ranked, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if dup.any():
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        item = int(s[row, 1:][dup[row]][0])
        raise ValueError(
            f"item {item} appears twice in the candidate list of user row {row}: "
            "an item in the candidate list twice is a bug, not a tie"
        )
    return ranked


def relevance(ranked: np.ndarray, targets: Ragged) -> tuple[np.ndarray, np.ndarray]:
    """(rel, n_targets): rel[u, i] = ranked[u, i] is in u's distinct targets; |T_u|."""
    n = len(ranked)
    if len(targets) != n:
        raise ValueError(f"{n} ranked rows but {len(targets)} target rows")
    t = targets.distinct()
    if len(t.values) and t.values.min() < 0:
        raise ValueError("targets hold a negative item")
    # One (user, item) key space lets a single np.isin test every user's list at once.
    span = int(max(ranked.max(initial=0), t.values.max(initial=0))) + 1
    keys = np.arange(n, dtype=np.int64)[:, None] * span + ranked
    rel = np.isin(keys, t.row_ids() * span + t.values) & (ranked >= 0)
    return rel, t.lengths


def compute_metrics(
    ranked: np.ndarray,
    targets: Ragged | Iterable[Sequence[int] | np.ndarray],
    ks: Sequence[int] = (10, 100),
    metrics: Sequence[str] = METRICS,
) -> MetricResult:
    """Per-user metrics at every k in ``ks`` (each k at most ``ranked.shape[1]``)."""
    ranked = check_ranked(ranked)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {METRICS}")
    width = ranked.shape[1]
    if any(k < 1 or k > width for k in ks):
        raise ValueError(f"every k must be in 1..{width} (the ranking width), got {list(ks)}")
    rel, n_targets = relevance(ranked, as_ragged(targets))
    evaluated = n_targets > 0
    rel, n_t = rel[evaluated].astype(np.float64), n_targets[evaluated]
    pos = np.arange(1, width + 1, dtype=np.float64)
    discount = 1.0 / np.log2(pos + 1.0)
    hits = np.cumsum(rel, axis=1)
    dcg = np.cumsum(rel * discount, axis=1)
    ap_sum = np.cumsum(rel * hits / pos, axis=1)
    ideal = np.cumsum(discount)
    first_hit = np.where(rel.any(axis=1), rel.argmax(axis=1), width)
    out: dict[tuple[str, int], np.ndarray] = {}
    for k in ks:
        h = hits[:, k - 1]
        denom = np.minimum(n_t, k)
        values = {
            "hr": (h > 0).astype(np.float64),
            "recall": h / denom,
            "precision": h / k,
            "ndcg": dcg[:, k - 1] / ideal[denom - 1],
            "map": ap_sum[:, k - 1] / denom,
            "mrr": np.where(first_hit < k, 1.0 / (first_hit + 1.0), 0.0),
        }
        for m in metrics:
            out[(m, k)] = values[m]
    return MetricResult(out, evaluated, int((~evaluated).sum()))


def coverage(ranked: np.ndarray, k: int, n_catalog: int) -> float:
    """|union of every user's top-k| / |catalogue|; pass only the evaluated users' rows."""
    top = np.asarray(ranked)[:, :k]
    return len(np.unique(top[top >= 0])) / n_catalog if n_catalog else float("nan")
