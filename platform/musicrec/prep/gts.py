"""Global temporal split (docs/temporal-split.md, paper 002 §4.1).

Windows are half-open, in seconds, computed from ``test_end`` (``gts.last_timestamp``, or
the largest timestamp of all events plus one)::

    test  = [test_end - test_size, test_end)
    gap   = [test_start - gap, test_start)                      no split
    val   = [test_start - gap - val_size, test_start - gap)     only when val_size > 0
    gap   = [val_start - gap, val_start)                        no split

Each window has a stage: the validation stage trains on events before ``val_start - gap``,
the test stage on events before ``test_start - gap`` (which, as in Yambda with val_size = 0,
includes the validation window and its gap). Events at or after ``test_end`` are ignored.

Feedback (applied before splitting; the docs/tasks.md §2 filters do not apply): ``listen_plus`` = listens
with ``played_ratio_pct >= listen_plus_min_ratio_pct`` (null excluded); ``like`` = like
events. With ``net_unlikes``, a like is dropped when the next like-or-unlike event of the
same user and item is an unlike; netting looks only inside the period a like belongs to
(the stage's training period, or the window), so no future event leaks into training. At
an equal (timestamp, item) a like comes before an unlike.

Per (window, feedback) and user with at least one training event: ``next_track`` /
``next_artist`` targets are the distinct window tracks / mapped artists; T1/T3 those absent
from the user's stage training history, T2/T4 those present; sorted ascending. Users with
window events but no training event are dropped (counted); rows with empty targets are
omitted (counted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from musicrec.config.schema import GtsConfig
from musicrec.contract import GTS_TASKS, Domain, Protocol, task
from musicrec.prep.build import (
    LIKE,
    LISTEN_PLUS,
    UNLIKE,
    Histories,
    PartitionFn,
    SequenceStats,
    constant,
    count_batch,
    list_array,
    output_batch,
    per_chunk,
    ragged,
    sequence_batches,
    to_stream,
    with_sequence_stats,
)

FEEDBACK_CODES = {"listen_plus": LISTEN_PLUS, "like": LIKE}


@dataclass(frozen=True)
class Window:
    name: str  # val | test
    start: int
    end: int
    train_end: int  # the stage trains on events with timestamp < train_end


@dataclass(frozen=True)
class Windows:
    test_end: int
    windows: tuple[Window, ...]  # val first when present


def plan_windows(cfg: GtsConfig, max_timestamp: int) -> Windows:
    test_end = cfg.last_timestamp if cfg.last_timestamp is not None else max_timestamp + 1
    test_start = test_end - cfg.test_size
    test = Window("test", test_start, test_end, test_start - cfg.gap)
    if cfg.val_size == 0:
        return Windows(test_end, (test,))
    val_end = test_start - cfg.gap
    val_start = val_end - cfg.val_size
    return Windows(test_end, (Window("val", val_start, val_end, val_start - cfg.gap), test))


def feedback_events(events: DataFrame, cfg: GtsConfig, test_end: int) -> DataFrame:
    """The GTS events of every configured feedback, before ``test_end``, in the internal stream layout."""
    kind, ratio = F.col("event_type"), F.col("played_ratio_pct")
    code = F.when((kind == "listen") & (ratio >= cfg.listen_plus_min_ratio_pct), LISTEN_PLUS)
    wanted = F.lit(False)
    if "listen_plus" in cfg.feedbacks:
        wanted = wanted | ((kind == "listen") & ratio.isNotNull() & (ratio >= cfg.listen_plus_min_ratio_pct))
    if "like" in cfg.feedbacks:
        wanted = wanted | (kind == "like")
        code = code.when(kind == "like", LIKE)
        if cfg.net_unlikes:
            wanted = wanted | (kind == "unlike")
            code = code.when(kind == "unlike", UNLIKE)
    return to_stream(events.filter(wanted & (F.col("timestamp") < test_end)), code)


def kept_likes(h: Histories) -> np.ndarray:
    """Like rows of ``h`` (likes and unlikes of one period) that no later unlike cancels."""
    like = h.code == LIKE
    unlike = h.code == UNLIKE
    if not unlike.any():
        return like
    order = np.lexsort((unlike, h.timestamp, h.item, h.group))
    g, item, u = h.group[order], h.item[order], unlike[order]
    cancelled = np.zeros(len(order), dtype=bool)
    cancelled[:-1] = (g[1:] == g[:-1]) & (item[1:] == item[:-1]) & u[1:]
    keep = np.empty(len(order), dtype=bool)
    keep[order] = ~u & ~cancelled
    return keep


def period(events: Histories, feedback: str, start: int | None, end: int) -> Histories:
    """The feedback's events of one period [start, end) (start None: from the beginning)."""
    code = FEEDBACK_CODES[feedback]
    in_period = events.timestamp < end
    if start is not None:
        in_period &= events.timestamp >= start
    if feedback == "like":
        events = events.select(in_period & ((events.code == LIKE) | (events.code == UNLIKE)))
        return events.select(kept_likes(events))
    return events.select(in_period & (events.code == code))


def _pair_keys(h: Histories, domain: Domain) -> np.ndarray:
    """Distinct (user, item) pairs as sorted int64 keys user << 32 | item; unmapped artists left out."""
    items = h.items(domain)
    valid = items >= 0
    return np.unique((h.group[valid] << 32) | items[valid].astype(np.int64))


@dataclass(frozen=True)
class WindowTargets:
    users: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    empty: int  # users with training and window events whose targets are empty


def window_targets(train: Histories, window: Histories) -> tuple[dict[str, WindowTargets], dict[str, int]]:
    """Targets of every GTS task for users of one chunk, plus the user counts of the window."""
    has_train = train.user_rows() > 0
    in_window = window.user_rows() > 0
    evaluated = has_train & in_window
    out: dict[str, WindowTargets] = {}
    for name in GTS_TASKS:
        t = task(name)
        keys = _pair_keys(window, t.domain)
        keys = keys[has_train[keys >> 32]]
        if t.relation is not None:
            present = np.isin(keys, _pair_keys(train, t.domain), assume_unique=True)
            keys = keys[present if t.relation == "present" else ~present]
        users, offsets = ragged(keys >> 32, train.n_users)
        items = (keys & 0xFFFFFFFF).astype(np.int32)
        out[name] = WindowTargets(users, offsets, items, int(evaluated.sum()) - len(users))
    counts = {
        "users_with_train": int(has_train.sum()),
        "users_dropped_no_train": int((in_window & ~has_train).sum()),
        "users_without_window_events": int((has_train & ~in_window).sum()),
    }
    return out, counts


@dataclass(frozen=True)
class GtsParams:
    windows: Windows
    feedbacks: tuple[str, ...]
    ks: tuple[int, ...]


def sequences_fn(p: GtsParams) -> PartitionFn:
    """Per chunk of GTS events: each stage's training sequences (protocol ``gts_<window>_<feedback>``)."""

    def fn(events: Histories) -> Iterator[pa.RecordBatch]:
        train_split = np.zeros(events.n_users, dtype=np.int8)
        for feedback in p.feedbacks:
            for w in p.windows.windows:
                train = period(events, feedback, None, w.train_end)
                yield from sequence_batches(train, Protocol.gts(w.name, feedback).name, train_split, p.ks)

    return per_chunk(fn)


def outputs_fn(p: GtsParams) -> PartitionFn:
    """Per chunk of GTS events: ``gts_examples`` rows, counts and the training sequences'
    statistics (multiplexed layout)."""

    def fn(events: Histories, sequence_stats: SequenceStats) -> Iterator[pa.RecordBatch]:
        for feedback in p.feedbacks:
            for w in p.windows.windows:
                train = period(events, feedback, None, w.train_end)
                window = period(events, feedback, w.start, w.end)
                targets, counts = window_targets(train, window)
                protocol = Protocol.gts(w.name, feedback).name
                yield from sequence_stats.add(train, protocol)
                prefix = f"{w.name}/{feedback}"
                stats = {f"{prefix}/{name}": value for name, value in counts.items()}
                for name, t in targets.items():
                    stats[f"{prefix}/{name}/examples"] = len(t.users)
                    stats[f"{prefix}/{name}/targets"] = len(t.items)
                    stats[f"{prefix}/{name}/empty_targets"] = t.empty
                    n = len(t.users)
                    if n:
                        yield output_batch(
                            "gts",
                            n,
                            uid=pa.array(events.uid[t.users], pa.int32()),
                            window=constant(w.name, n, pa.string()),
                            feedback=constant(feedback, n, pa.string()),
                            task=constant(name, n, pa.string()),
                            targets=list_array(t.offsets, t.items, pa.int32()),
                        )
                yield count_batch("gts", stats)
                yield count_batch("users", {protocol: counts["users_with_train"]})
                unmapped = train.artist < 0
                yield count_batch(
                    "artists",
                    {
                        f"{protocol}/unmapped_events": int(unmapped.sum()),
                        f"{protocol}/users_with_unmapped": int(
                            (np.bincount(train.group[unmapped], minlength=train.n_users) > 0).sum()
                        ),
                    },
                )

    return with_sequence_stats(p.ks, fn)
