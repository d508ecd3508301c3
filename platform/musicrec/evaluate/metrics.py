"""Exact ranking metrics of docs/metrics.md, vectorised over users.

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

from musicrec.arrays import Ragged, as_ragged

METRICS: tuple[str, ...] = ("hr", "recall", "precision", "ndcg", "map", "mrr")


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


def key_span(n_rows: int, *items: np.ndarray) -> int:
    """The item span of int64 (row, item) keys ``row * span + item`` over ``n_rows`` rows.

    Raises rather than let the keys wrap around, which would make unrelated pairs equal.
    """
    span = max((int(np.max(v, initial=0)) for v in items), default=0) + 1
    if max(n_rows, 1) * span > np.iinfo(np.int64).max:
        raise ValueError(f"item id {span - 1} is too large for {n_rows} rows of int64 (row, item) keys")
    return span


def relevance(ranked: np.ndarray, targets: Ragged) -> tuple[np.ndarray, np.ndarray]:
    """(rel, n_targets): rel[u, i] = ranked[u, i] is in u's distinct targets; |T_u|."""
    n = len(ranked)
    if len(targets) != n:
        raise ValueError(f"{n} ranked rows but {len(targets)} target rows")
    t = targets.distinct()
    if len(t.values) and t.values.min() < 0:
        raise ValueError("targets hold a negative item")
    # One (user, item) key space lets a single np.isin test every user's list at once.
    span = key_span(n, ranked, t.values)
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
