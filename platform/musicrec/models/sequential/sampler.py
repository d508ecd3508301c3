"""Training windows over long histories, deterministic given (seed, epoch), vectorised in numpy.

A user's history is tiled from its end into windows of ``span`` events that advance by
``stride``: for next-item training span = max_len + 1 and stride = max_len, so every event
but the first is a target exactly once per epoch and the most recent window is the one
scoring will see. The epoch's windows are shuffled by ``default_rng([seed, epoch])`` and cut
into global batches of similar-size windows; a worker takes its contiguous share of each global batch, so any number
of workers with the same global batch sees the same windows (and, since everything random is
drawn per global batch from ``default_rng([seed, epoch, batch])``, the same negatives and masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicrec.arrays import Ragged

# Global batches whose windows are sorted together by size (see global_batches).
POOL = 64


@dataclass(frozen=True)
class Tiling:
    span: int  # events per window
    stride: int  # events between the ends of consecutive windows
    min_events: int  # a window shorter than this teaches nothing (next-item: 2, cloze: 1)

    def counts(self, lengths: np.ndarray) -> np.ndarray:
        usable = np.maximum(lengths - self.min_events + 1, 0)
        return -(-usable // self.stride)


def epoch_windows(
    lengths: np.ndarray, tiling: Tiling, per_user: int | None, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """(row, end) of each window of the epoch, in the epoch's shuffled order.

    ``per_user`` None takes every window. A cap n takes n of a user's windows, starting at
    window ``epoch * n`` (mod the user's count) and counting back in time, so consecutive
    epochs walk through the whole history.
    """
    counts = tiling.counts(np.asarray(lengths, dtype=np.int64))
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    back = np.arange(len(rows), dtype=np.int64) - starts[rows]  # 0: the most recent window
    if per_user is not None:
        keep = (back - epoch * per_user) % counts[rows] < per_user
        rows, back = rows[keep], back[keep]
    ends = lengths[rows] - back * tiling.stride
    order = np.random.default_rng([seed, epoch]).permutation(len(rows))
    return rows[order], ends[order]


def window_matrix(items: Ragged, rows: np.ndarray, ends: np.ndarray, span: int, pad: int) -> np.ndarray:
    """(len(rows), span) int64: each window's events left-padded with ``pad``."""
    first = items.offsets[rows]
    stop = first + ends
    start = np.maximum(stop - span, first)
    index = stop[:, None] - span + np.arange(span)
    if not len(items.values):
        # Every history empty (e.g. a familiar-task model's input derived from all-new items): all
        # padding, and there is no value to gather even for the masked-out positions.
        return np.full(index.shape, pad, dtype=np.int64)
    return np.where(index >= start[:, None], items.values[index.clip(min=0)], pad)


def global_batches(sizes: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's global batches (window positions, in training order).

    A batch is as wide as its longest window, so windows of similar size are batched together:
    each pool of ``POOL`` batches' worth of (already shuffled) windows is sorted by size and cut
    into batches, and the batches are then shuffled. Short sequences (``disc_*``) then cost what
    they hold instead of ``max_len`` each.
    """
    pool = POOL * batch_size
    batches = []
    for lo in range(0, len(sizes), pool):
        order = lo + np.argsort(-sizes[lo : lo + pool], kind="stable")
        batches += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    # Key 2**32: no batch number (the key of a batch's own draws) reaches it.
    shuffled = np.random.default_rng([seed, epoch, 2**32]).permutation(len(batches))
    return [batches[i] for i in shuffled]


def worker_share(n: int, rank: int, world_size: int) -> slice:
    """Rank's contiguous share of a global batch of n windows (sizes differ by at most one)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    bounds = np.linspace(0, n, world_size + 1).round().astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


def trim(columns: np.ndarray, pad: int) -> int:
    """Leading columns that are padding in every row (what a batch can drop)."""
    real = (columns != pad).any(axis=0)
    return int(np.argmax(real)) if real.any() else columns.shape[1] - 1
