"""The event filters of docs/tasks.md §2, as DataFrame -> DataFrame transforms.

Each filter returns the kept listens and a one-row DataFrame of its counts (``rows_in``,
``rows_out``, ``users_in``, ``users_out`` and reason-specific columns), evaluated by the job
only when it writes the stats. The popularity and length filters need each user's events
in canonical order; they are written as window functions ordered by (timestamp, item_id)
so that, on a stream already partitioned by ``uid`` and sorted (see :mod:`build`), Spark
plans them with no further exchange or sort. "Most recent n" is "row number > count - n".
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


@dataclass(frozen=True)
class Filtered:
    df: DataFrame
    counts: DataFrame  # one row


def _user_window() -> tuple[Column, Column]:
    """(row number in canonical order, number of rows) of each row's user."""
    ordered = Window.partitionBy("uid").orderBy("timestamp", "item_id")
    return F.row_number().over(ordered), F.count(F.lit(1)).over(Window.partitionBy("uid"))


def _per_user_counts(per_user: DataFrame, **extra: Column) -> DataFrame:
    """Rows and users in and out from per-user ``n_in`` / ``n_out``."""
    return per_user.agg(
        F.sum("n_in").cast("long").alias("rows_in"),
        F.sum("n_out").cast("long").alias("rows_out"),
        F.count(F.lit(1)).cast("long").alias("users_in"),
        F.count_if(F.col("n_out") > 0).cast("long").alias("users_out"),
        *(column.cast("long").alias(name) for name, column in extra.items()),
    )


def consumption(listens: DataFrame, min_played_ratio_pct: int) -> Filtered:
    """Keep listens with ``played_ratio_pct >= min``; null ratios are dropped and counted."""
    ratio = F.col("played_ratio_pct")
    kept = ratio.isNotNull() & (ratio >= min_played_ratio_pct)
    per_user = listens.groupBy("uid").agg(
        F.count(F.lit(1)).alias("n_in"),
        F.count_if(kept).alias("n_out"),
        F.count_if(ratio.isNull()).alias("n_null"),
    )
    counts = _per_user_counts(
        per_user,
        rows_null_ratio=F.sum("n_null"),
        rows_below_min_ratio=F.sum(F.col("n_in") - F.col("n_out") - F.col("n_null")),
    )
    return Filtered(listens.filter(kept), counts)


def recent_track_users(listens: DataFrame, recent_window: int) -> DataFrame:
    """(item_id, users): for each track in some user's most recent ``recent_window`` listens, how many users."""
    row, n = _user_window()
    recent = listens.select("uid", "item_id", (row > n - recent_window).alias("recent")).filter("recent")
    # distinct per (uid, item) stays inside the user partitioning; only the count by item shuffles.
    return recent.select("uid", "item_id").distinct().groupBy("item_id").agg(F.count(F.lit(1)).alias("users"))


def popularity(listens: DataFrame, track_users: DataFrame, min_users: int) -> Filtered:
    """Keep listens of tracks that at least ``min_users`` users have in their recent window.

    ``track_users`` is :func:`recent_track_users` of the same listens; the kept tracks are
    broadcast (a catalogue-sized set of ids), so the user partitioning and order survive.
    """
    popular = track_users.filter(F.col("users") >= min_users).select("item_id")
    kept = listens.join(F.broadcast(popular), "item_id", "left_semi").select(*listens.columns)
    flagged = listens.join(F.broadcast(popular.withColumn("popular", F.lit(1))), "item_id", "left")
    per_user = flagged.groupBy("uid").agg(F.count(F.lit(1)).alias("n_in"), F.count("popular").alias("n_out"))
    tracks = track_users.agg(
        F.count(F.lit(1)).cast("long").alias("tracks_in_recent_windows"),
        F.count_if(F.col("users") >= min_users).cast("long").alias("tracks_kept"),
    )
    return Filtered(kept, _per_user_counts(per_user).crossJoin(tracks))


def length(listens: DataFrame, min_len: int, max_len: int) -> Filtered:
    """Drop users with fewer than ``min_len`` listens; keep each user's most recent ``max_len``."""
    row, n = _user_window()
    kept = (
        listens.select("*", row.alias("_row"), n.alias("_n"))
        .filter((F.col("_n") >= min_len) & (F.col("_row") > F.col("_n") - max_len))
        .drop("_row", "_n")
    )
    per_user = (
        listens.groupBy("uid")
        .agg(F.count(F.lit(1)).alias("n_in"))
        .select(
            "n_in",
            F.when(F.col("n_in") >= min_len, F.least("n_in", F.lit(max_len))).otherwise(0).alias("n_out"),
        )
    )
    counts = _per_user_counts(
        per_user,
        users_below_min_len=F.count_if(F.col("n_in") < min_len),
        rows_truncated_max_len=F.sum(
            F.when(F.col("n_in") >= min_len, F.greatest(F.col("n_in") - max_len, F.lit(0)))
        ),
    )
    return Filtered(kept, counts)
