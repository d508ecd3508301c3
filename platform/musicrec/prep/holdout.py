"""User-level holdout (docs/holdout.md): the user split and the last-``gt_size`` examples.

User split, reproducible by any engine: with 64-bit unsigned wrapping arithmetic,

    x = seed * 2**32 + uid                       (mod 2**64)
    h = splitmix64(x)                             (Steele, Lea & Flood's finaliser, below)
    u = (h >> 11) / 2**53                         (exact in float64, uniform in [0, 1))
    split = train if u < r_train, val if u < r_train + r_val (float64 sum), else test

Holdout examples, for each validation/test user and task: S = the task's sequence with
k = 1 (ground truth is never condensed); the ground truth is the last ``gt_size`` elements
of S, the cutoff c is the H(u) position of the first of them, and the model input is H(u)[:c]
in the task's domain (all tracks for T1/T2, mapped artists for T3/T4). Users with fewer than
``gt_size`` elements in S, or with an empty domain history before c, are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from musicrec.contract import HOLDOUT, HOLDOUT_TASKS, SPLITS, task
from musicrec.hashing import splitmix64
from musicrec.prep.build import (
    Histories,
    PartitionFn,
    SequenceStats,
    count_batch,
    list_array,
    output_batch,
    per_chunk,
    ragged,
    sequence_batches,
    split_labels,
    with_sequence_stats,
)
from musicrec.prep.sequences import sequence_mask

TOO_FEW = "skipped_too_few_task_events"
EMPTY_HISTORY = "skipped_empty_history"
SKIP_DETAIL = {
    TOO_FEW: "fewer than gt_size elements in the task's ground-truth sequence",
    EMPTY_HISTORY: "no event of the task's domain before the cutoff",
}
DUPLICATE_DETAIL = "listens identical in (uid, item_id, timestamp) to the previous one; kept, each is a listen"


def user_split(uid: np.ndarray, seed: int, ratios: Sequence[float]) -> np.ndarray:
    """Split code of each uid (index into ``SPLITS``), a pure function of (uid, seed)."""
    x = (np.uint64(seed) << np.uint64(32)) + np.asarray(uid, dtype=np.int64).astype(np.uint64)
    u = (splitmix64(x) >> np.uint64(11)).astype(np.float64) / float(2**53)
    train, val = float(ratios[0]), float(ratios[0]) + float(ratios[1])
    return np.where(u < train, 0, np.where(u < val, 1, 2)).astype(np.int8)


@dataclass(frozen=True)
class TaskExamples:
    """Examples of one task for the users of a :class:`Histories`; user-indexed masks say who was skipped."""

    users: np.ndarray  # user indices with an example
    history_offsets: np.ndarray
    history_items: np.ndarray
    history_timestamps: np.ndarray
    target_offsets: np.ndarray
    targets: np.ndarray
    too_few: np.ndarray  # bool per user
    empty_history: np.ndarray  # bool per user


def task_examples(h: Histories, name: str, gt_size: int) -> TaskExamples:
    """Holdout examples of task ``name`` for every user of ``h`` (each user's full H(u)) at once."""
    t = task(name)
    items = h.items(t.domain)
    present = h.user_rows() > 0
    truth = np.flatnonzero(sequence_mask(h.group, items, t.kind, 1))
    truth_group = h.group[truth]
    per_user = np.bincount(truth_group, minlength=h.n_users)
    enough = per_user >= gt_size
    end = np.cumsum(per_user)
    # Rank of each ground-truth-sequence element counted from the end of its user's sequence.
    from_end = end[truth_group] - 1 - np.arange(len(truth))
    in_gt = (from_end < gt_size) & enough[truth_group]
    cutoff = np.full(h.n_users, -1, dtype=np.int64)
    eligible = np.flatnonzero(enough)
    cutoff[eligible] = h.position[truth[end[eligible] - gt_size]]
    in_history = (h.position < cutoff[h.group]) & (items >= 0)
    history_len = np.bincount(h.group[in_history], minlength=h.n_users)
    evaluated = enough & (history_len > 0)
    history = np.flatnonzero(in_history & evaluated[h.group])
    users, history_offsets = ragged(h.group[history], h.n_users)
    gt_rows = truth[in_gt & evaluated[truth_group]]
    _, target_offsets = ragged(h.group[gt_rows], h.n_users)
    return TaskExamples(
        users=users,
        history_offsets=history_offsets,
        history_items=items[history],
        history_timestamps=h.timestamp[history],
        target_offsets=target_offsets,
        targets=items[gt_rows],
        too_few=present & ~enough,
        empty_history=enough & (history_len == 0),
    )


@dataclass(frozen=True)
class HoldoutParams:
    seed: int
    ratios: tuple[float, ...]
    ks: tuple[int, ...]
    gt_size: int


def sequences_fn(p: HoldoutParams) -> PartitionFn:
    """Per chunk of H(u): the ``holdout`` protocol's sequences of every user, labelled with the split."""

    def fn(h: Histories) -> Iterator[pa.RecordBatch]:
        yield from sequence_batches(h, HOLDOUT.name, user_split(h.uid, p.seed, p.ratios), p.ks)

    return per_chunk(fn)


def outputs_fn(p: HoldoutParams) -> PartitionFn:
    """Per chunk of H(u): user splits, holdout examples, their counts and the sequences'
    statistics (multiplexed layout)."""

    def fn(h: Histories, sequence_stats: SequenceStats) -> Iterator[pa.RecordBatch]:
        yield from sequence_stats.add(h, HOLDOUT.name)
        codes = user_split(h.uid, p.seed, p.ratios)
        yield output_batch("split", h.n_users, uid=pa.array(h.uid, pa.int32()), split=split_labels(codes))
        counts = {f"users/{s}": int((codes == i).sum()) for i, s in enumerate(SPLITS)}
        unmapped = h.artist < 0
        artist_counts = {
            "holdout/unmapped_events": int(unmapped.sum()),
            "holdout/users_with_unmapped": int(
                (np.bincount(h.group[unmapped], minlength=h.n_users) > 0).sum()
            ),
        }
        evaluation = h.select(codes[h.group] > 0)
        for name in HOLDOUT_TASKS:
            ex = task_examples(evaluation, name, p.gt_size)
            user_codes = codes[ex.users]
            for i, split in enumerate(SPLITS[1:], start=1):
                counts[f"{name}/{split}/evaluated"] = int((user_codes == i).sum())
                counts[f"{name}/{split}/{TOO_FEW}"] = int((ex.too_few & (codes == i)).sum())
                counts[f"{name}/{split}/{EMPTY_HISTORY}"] = int((ex.empty_history & (codes == i)).sum())
            n = len(ex.users)
            if n:
                yield output_batch(
                    "holdout",
                    n,
                    uid=pa.array(evaluation.uid[ex.users], pa.int32()),
                    split=split_labels(user_codes),
                    task=pa.repeat(pa.scalar(name), n),
                    history_items=list_array(ex.history_offsets, ex.history_items, pa.int32()),
                    history_timestamps=list_array(ex.history_offsets, ex.history_timestamps, pa.int64()),
                    targets=list_array(ex.target_offsets, ex.targets, pa.int32()),
                )
        yield count_batch(
            "holdout", counts, {k: SKIP_DETAIL[k.rsplit("/", 1)[1]] for k in counts if "skipped" in k}
        )
        yield count_batch("artists", artist_counts)
        # Identical (uid, item_id, timestamp) listens are all kept (each is a listen), and counted.
        # Canonical order puts them next to each other.
        same = (h.group[1:] == h.group[:-1]) & (h.timestamp[1:] == h.timestamp[:-1]) & (h.item[1:] == h.item[:-1])
        yield count_batch(
            "histories", {"duplicate_listens": int(same.sum())}, {"duplicate_listens": DUPLICATE_DETAIL}
        )
        yield count_batch("users", {HOLDOUT.name: h.n_users})

    return with_sequence_stats(p.ks, fn)
