"""Task sequences of paper 000, section 3, as pure functions of ordered histories.

One implementation serves batch preprocessing (many users at once, inside Spark's
``mapInArrow``) and evaluation/inference (one history at a time), so a discovery can
never be counted differently in training data and in a model's input.

Histories are passed as flat arrays in canonical order (docs/tasks.md §1)
together with a non-decreasing ``group`` array naming the user of each element; a
single history is the case ``group = zeros``. Items < 0 stand for "no item" (an
unmapped artist) and are never part of any sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicrec.contract.tasks import KINDS, Kind, parse_name


def canonical_order(uid: np.ndarray, timestamp: np.ndarray, item_id: np.ndarray) -> np.ndarray:
    """Permutation sorting events by (uid, timestamp, item_id); stable for identical events."""
    return np.lexsort((item_id, timestamp, uid))


@dataclass(frozen=True)
class PairStats:
    """What every sequence of ordered histories is derived from, per element: whether it has an
    item (``items >= 0``), whether it is the first occurrence of its (group, item) pair, and how
    often that pair occurs (0 without an item). One sort serves every kind and k."""

    valid: np.ndarray
    first: np.ndarray
    counts: np.ndarray


def pair_stats(group: np.ndarray, items: np.ndarray) -> PairStats:
    items = np.asarray(items)
    valid = items >= 0
    first = np.zeros(len(items), dtype=bool)
    counts = np.zeros(len(items), dtype=np.int64)
    at = np.flatnonzero(valid)
    if len(at) == 0:
        return PairStats(valid, first, counts)
    values = items[at].astype(np.int64)
    if values.max() >= 1 << 31:
        raise ValueError(f"item id {int(values.max())} does not fit the tables' int32 item columns")
    # A stable sort by (group, item) keeps time order inside each pair; one int64 key (both are
    # non-negative and below 2**31) sorts faster than np.lexsort of the two.
    key = (np.asarray(group)[at].astype(np.int64) << 32) | values
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.empty(len(at), dtype=bool)
    starts[0] = True
    starts[1:] = sorted_key[1:] != sorted_key[:-1]
    run_id = np.cumsum(starts) - 1
    rows = at[order]
    first[rows] = starts
    counts[rows] = np.bincount(run_id)[run_id]
    return PairStats(valid, first, counts)


def stats_mask(stats: PairStats, kind: Kind, k: int = 1) -> np.ndarray:
    """Which elements belong to the ``kind`` sequence, k-condensed (see :func:`sequence_mask`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown sequence kind {kind!r}; expected one of {KINDS}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    keep = {"lh": stats.valid, "disc": stats.first, "fam": stats.valid & ~stats.first}[kind]
    return keep & (stats.counts >= k) if k > 1 else keep.copy()


def sequence_mask(group: np.ndarray, items: np.ndarray, kind: Kind, k: int = 1) -> np.ndarray:
    """Which elements of the ordered histories belong to the ``kind`` sequence, k-condensed.

    - ``lh``: every element; ``disc``: first listens of an item; ``fam``: repeats.
    - k-condensation keeps an element only if its item occurs at least ``k`` times in the
      history the sequence is derived from (the same arrays passed here), so an evaluation
      user's counts only see events before the cutoff when only those are passed.
    - Elements with ``items < 0`` (unmapped artist) belong to no sequence and do not count.
    """
    return stats_mask(pair_stats(group, items), kind, k)


def derive(items: np.ndarray, kind: Kind, k: int = 1) -> np.ndarray:
    """Positions (into ``items``) of one ordered history's ``kind`` sequence, k-condensed."""
    items = np.asarray(items)
    return np.flatnonzero(sequence_mask(np.zeros(len(items), dtype=np.int64), items, kind, k))


def derive_items(items: np.ndarray, name: str, k: int = 1) -> np.ndarray:
    """Items of the named sequence of one history given in the sequence's domain (tracks or artists)."""
    kind, _ = parse_name(name)
    items = np.asarray(items)
    return items[derive(items, kind, k)]
