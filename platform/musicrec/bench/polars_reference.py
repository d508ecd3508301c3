"""An independent single-machine implementation of the preprocessing transform, in Polars.

It re-derives everything from docs/tasks.md, docs/holdout.md and docs/temporal-split.md with Polars
expressions and shares no code with :mod:`musicrec.prep`: discoveries are
``cum_count`` over (user, item) == 1, condensation is ``len`` over (user, item) >= k, the
user split hash is written again with Polars' wrapping uint64 arithmetic. The differential
test checks that both implementations agree row for row; the preprocessing benchmark
compares their speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from musicrec.config import Config
from musicrec.contract import DOMAINS, GTS_TASKS, HOLDOUT, HOLDOUT_TASKS, TASKS, Protocol, schemas

ORDER = ["uid", "timestamp", "item_id"]
# The events column each task domain reads.
DOMAIN_COLUMN = {"track": "item_id", "artist": "artist_id"}
MASK64 = (1 << 64) - 1


def _u64(value: int) -> pl.Expr:
    return pl.lit(value & MASK64, dtype=pl.UInt64)


def user_splits(uids: pl.DataFrame, seed: int, ratios: list[float]) -> pl.DataFrame:
    """uid -> split with the documented splitmix64 rule (shifts written as floor divisions)."""
    z = (pl.col("uid").cast(pl.UInt64) + _u64(seed << 32)) + _u64(0x9E3779B97F4A7C15)
    z = (z.xor(z // (1 << 30))) * _u64(0xBF58476D1CE4E5B9)
    z = (z.xor(z // (1 << 27))) * _u64(0x94D049BB133111EB)
    z = z.xor(z // (1 << 31))
    u = (z // (1 << 11)).cast(pl.Float64) / float(2**53)
    train, val = float(ratios[0]), float(ratios[0]) + float(ratios[1])
    split = (
        pl.when(u < train).then(pl.lit("train")).when(u < val).then(pl.lit("val")).otherwise(pl.lit("test"))
    )
    return uids.select("uid", split.alias("split"))


def histories(events: pl.DataFrame, config: Config) -> pl.DataFrame:
    """H(u): listens after the consumption, popularity and length filters, with positions."""
    pre = config.preprocess
    listens = (
        events.filter(
            (pl.col("event_type") == "listen") & (pl.col("played_ratio_pct") >= pre.min_played_ratio_pct)
        )
        .select("uid", "timestamp", "item_id", "artist_id")
        .sort(ORDER)
    )
    # pl.len() is UInt32: "n - window" must not wrap around.
    n, row = pl.len().over("uid").cast(pl.Int64), pl.int_range(pl.len()).over("uid")
    recent = listens.filter(row >= n - pre.popularity.recent_window).select("uid", "item_id").unique()
    popular = (
        recent.group_by("item_id").len().filter(pl.col("len") >= pre.popularity.min_users).select("item_id")
    )
    kept = listens.join(popular, on="item_id", how="semi").sort(ORDER)
    kept = kept.filter((n >= pre.min_len) & (row >= n - pre.max_len))
    return kept.with_columns(position=pl.int_range(pl.len()).over("uid").cast(pl.Int32))


def _with_counts(history: pl.DataFrame, column: str) -> pl.DataFrame:
    """Domain rows with the occurrence number and total count of each (user, item)."""
    return history.filter(pl.col(column).is_not_null()).with_columns(
        occurrence=pl.col(column).cum_count().over(["uid", column]),
        total=pl.len().over(["uid", column]),
    )


def sequences(
    history: pl.DataFrame, protocol: str, split: pl.DataFrame | None, ks: list[int]
) -> Iterator[pl.DataFrame]:
    """The named sequences of ``history`` (canonical order, with ``position``), one frame per (name, k).

    A frame has one row per user whose sequence is non-empty.
    """
    for domain, column in (("track", "item_id"), ("artist", "artist_id")):
        counted = _with_counts(history, column)
        for kind in ("lh", "disc", "fam"):
            kind_rule = {
                "lh": pl.lit(True),
                "disc": pl.col("occurrence") == 1,
                "fam": pl.col("occurrence") > 1,
            }[kind]
            for k in ks:
                part = (
                    counted.filter(kind_rule & (pl.col("total") >= k))
                    .group_by("uid", maintain_order=True)
                    .agg(
                        items=pl.col(column).cast(pl.Int32),
                        timestamps=pl.col("timestamp"),
                        positions=pl.col("position"),
                    )
                    .with_columns(
                        protocol=pl.lit(protocol), name=pl.lit(f"{kind}_{domain}"), k=pl.lit(k, pl.Int32)
                    )
                )
                part = (
                    part.join(split, on="uid", how="left")
                    if split is not None
                    else part.with_columns(split=pl.lit("train"))
                )
                yield part.select(*schemas.SEQUENCES.names)


def holdout_examples(history: pl.DataFrame, splits: pl.DataFrame, gt_size: int) -> pl.DataFrame:
    evaluation = history.join(splits.filter(pl.col("split") != "train"), on="uid")
    frames = []
    for task in HOLDOUT_TASKS:
        kind, column = TASKS[task].kind, DOMAIN_COLUMN[TASKS[task].domain]
        counted = _with_counts(evaluation, column)
        truth = counted.filter(pl.col("occurrence") == 1 if kind == "disc" else pl.col("occurrence") > 1)
        count = pl.len().over("uid").cast(pl.Int64)
        from_end = count - 1 - pl.int_range(pl.len()).over("uid")
        last = truth.filter((count >= gt_size) & (from_end < gt_size))
        targets = last.group_by("uid", maintain_order=True).agg(
            targets=pl.col(column).cast(pl.Int32),
            cutoff=pl.col("position").min(),
            split=pl.col("split").first(),
        )
        history_rows = (
            evaluation.filter(pl.col(column).is_not_null())
            .join(targets.select("uid", "cutoff"), on="uid")
            .filter(pl.col("position") < pl.col("cutoff"))
            .sort(["uid", "position"])
        )
        inputs = history_rows.group_by("uid", maintain_order=True).agg(
            history_items=pl.col(column).cast(pl.Int32), history_timestamps=pl.col("timestamp")
        )
        frames.append(targets.join(inputs, on="uid").with_columns(task=pl.lit(task)))
    return pl.concat(frames).select("uid", "task", "split", "history_items", "history_timestamps", "targets")


@dataclass(frozen=True)
class Window:
    name: str
    start: int
    end: int
    train_end: int


def windows(config: Config, max_timestamp: int) -> list[Window]:
    g = config.gts
    test_end = g.last_timestamp if g.last_timestamp is not None else max_timestamp + 1
    test_start = test_end - g.test_size
    out = [Window("test", test_start, test_end, test_start - g.gap)]
    if g.val_size > 0:
        val_start = test_start - g.gap - g.val_size
        out.insert(0, Window("val", val_start, test_start - g.gap, val_start - g.gap))
    return out


def _feedback(
    events: pl.DataFrame, feedback: str, config: Config, start: int | None, end: int
) -> pl.DataFrame:
    """One feedback's events in [start, end), canonical order; likes netted inside the period if configured."""
    ts = pl.col("timestamp")
    in_period = (ts < end) if start is None else ((ts >= start) & (ts < end))
    kind = pl.col("event_type")
    if feedback == "listen_plus":
        picked = events.filter(
            in_period
            & (kind == "listen")
            & (pl.col("played_ratio_pct") >= config.gts.listen_plus_min_ratio_pct)
        )
    elif not config.gts.net_unlikes:
        picked = events.filter(in_period & (kind == "like"))
    else:
        both = events.filter(in_period & kind.is_in(["like", "unlike"])).with_columns(
            unlike=(kind == "unlike").cast(pl.Int8)
        )
        both = both.sort(["uid", "item_id", "timestamp", "unlike"])
        next_unlike = pl.col("unlike").shift(-1).over(["uid", "item_id"]).fill_null(0) == 1
        picked = both.filter((pl.col("unlike") == 0) & ~next_unlike)
    return picked.select("uid", "timestamp", "item_id", "artist_id").sort(ORDER)


def gts_parts(events: pl.DataFrame, config: Config) -> Iterator[tuple[str, pl.DataFrame]]:
    """("sequences", part) for the gts_* protocols, then ("gts_examples", table)."""
    max_ts = int(events.select(pl.col("timestamp").max()).item())
    test_end = max(w.end for w in windows(config, max_ts))
    events = events.filter(pl.col("timestamp") < test_end)
    example_frames = []
    for feedback in config.gts.feedbacks:
        for w in windows(config, max_ts):
            train = _feedback(events, feedback, config, None, w.train_end).with_columns(
                position=pl.int_range(pl.len()).over("uid").cast(pl.Int32)
            )
            for part in sequences(train, Protocol.gts(w.name, feedback).name, None, config.preprocess.ks):
                yield "sequences", part
            window = _feedback(events, feedback, config, w.start, w.end)
            users = train.select("uid").unique()
            for domain in DOMAINS:
                column = DOMAIN_COLUMN[domain]
                pairs = window.filter(pl.col(column).is_not_null()).select("uid", column).unique()
                pairs = pairs.join(users, on="uid", how="semi")
                seen = train.select("uid", column).unique()
                chosen_by_relation = {
                    None: pairs,
                    "absent": pairs.join(seen, on=["uid", column], how="anti"),
                    "present": pairs.join(seen, on=["uid", column], how="semi"),
                }
                for task in (t for t in GTS_TASKS if TASKS[t].domain == domain):
                    chosen = chosen_by_relation[TASKS[task].relation]
                    example_frames.append(
                        chosen.group_by("uid")
                        .agg(targets=pl.col(column).sort().cast(pl.Int32))
                        .with_columns(window=pl.lit(w.name), feedback=pl.lit(feedback), task=pl.lit(task))
                    )
    yield "gts_examples", pl.concat(example_frames).select(*schemas.GTS_EXAMPLES.names)


def parts(events: pl.DataFrame, config: Config) -> Iterator[tuple[str, pl.DataFrame]]:
    """(table, part) pairs; a table is the concatenation of its parts. Lets a writer stream ``sequences``."""
    history = histories(events, config)
    splits = user_splits(history.select("uid").unique().sort("uid"), config.seed, config.holdout.split_ratios)
    yield "user_splits", splits
    for part in sequences(history, HOLDOUT.name, splits, config.preprocess.ks):
        yield "sequences", part
    yield "holdout_examples", holdout_examples(history, splits, config.holdout.gt_size)
    del history
    yield from gts_parts(events, config)


def preprocess(events: pl.DataFrame, config: Config) -> dict[str, pl.DataFrame]:
    """The tables ``sequences``, ``user_splits``, ``holdout_examples``, ``gts_examples`` for ``events``."""
    tables: dict[str, list[pl.DataFrame]] = {}
    for table, part in parts(events, config):
        tables.setdefault(table, []).append(part)
    return {table: pl.concat(frames) for table, frames in tables.items()}
