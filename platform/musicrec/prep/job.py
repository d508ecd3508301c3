"""The preprocessing job: events -> sequences, user_splits, holdout_examples, gts_examples, stats.

How it scales
-------------
Besides one scan for a scalar (the largest timestamp, which places the GTS windows) and one
aggregation for the consumption counts, the events go through **one shuffle**: the
consumption-filtered listens (holdout stream) and the GTS feedback events are unioned,
hash-partitioned by ``uid`` and sorted by ``(uid, timestamp, item_id)``
(:func:`build.partition_by_user`), and persisted (MEMORY_AND_DISK) because every later pass
reads them. After that nothing moves a user's events again: the popularity and length
filters are window functions over that partitioning and order (Spark plans no further
exchange or sort on a materialised cache); the popularity threshold needs one aggregation by
track over at most ``recent_window`` rows per user, and the kept tracks are broadcast (a
catalogue-sized set of ids). H(u) is persisted too. Sequences and examples come from
``mapInArrow`` over whole partitions, a chunk of complete users at a time, so memory per
Python worker is bounded by the chunk size plus one user's events, whatever the data size.
Nothing but scalars and aggregated statistics reaches the driver.

Two passes read the persisted data: one for the sequences (holdout and GTS protocols),
written straight to the table's staging folder, and one for everything small (splits,
examples, partial counts, and the sequences' statistics: users per length and per-item maxima,
from the same masks, see :class:`build.SequenceStats`), whose multiplexed result is persisted
and split into tables. Each output is written by one task per core (``coalesce``), because
every write task opens one file per partition value and ``sequences`` has ~90 of them: small
files, not bytes, dominated the write before. Known cost at scale:
a partitioned write makes Spark sort each task's rows by (protocol, name, k), arrays
included, which spills to local disk on large inputs; it is memory-safe, unlike concurrent
writers, which would keep ~90 Parquet row-group buffers per task in the heap.

Atomicity: every table is staged (computed once, under the cache, and written, invisible to
readers) and then the whole set is published as one snapshot (:mod:`musicrec.lake.snapshot`),
so a run that fails at any point, between two table commits included, leaves readers on the
previous snapshot. Stats are written with ``replace_where={"job": "preprocess"}`` so other
jobs' statistics stay.

Decisions (docs/decisions.md) are documented in :mod:`filters`, :mod:`holdout`,
:mod:`gts` and :mod:`stats`; empty sequences get no row in ``sequences`` (counted as
``empty_users`` in stats), and ``user_splits`` holds the users of H(u).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from musicrec.config import Config
from musicrec.contract import HOLDOUT, schemas
from musicrec.errors import InputError
from musicrec.lake.delta import table_exists
from musicrec.lake.snapshot import JobSnapshot
from musicrec.lake.tables import table_path
from musicrec.prep import build, filters, gts, holdout, stats
from musicrec.prep.build import HOLDOUT_LISTEN, OUTPUT_SCHEMA

log = logging.getLogger(__name__)

OUTPUT_TABLES: tuple[str, ...] = ("sequences", "user_splits", "holdout_examples", "gts_examples", "stats")


class _Cache:
    """Persisted DataFrames of one run, materialised when added and released on exit."""

    def __init__(self) -> None:
        self.frames: list[DataFrame] = []

    def add(self, df: DataFrame) -> DataFrame:
        # Materialise now: plans built on a cache that already exists know its partitioning
        # and order, so the per-user steps on top of it add no exchange or sort.
        self.frames.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        df.count()
        return df

    def __enter__(self) -> _Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        for df in self.frames:
            df.unpersist()


@dataclass(frozen=True)
class _Streams:
    histories: DataFrame  # H(u): listens after the §2 filters, by user, canonical order
    gts_events: DataFrame  # GTS feedback events, by user, canonical order
    filter_counts: dict[str, DataFrame]


def _user_streams(config: Config, events: DataFrame, windows: gts.Windows, cache: _Cache) -> _Streams:
    """The one shuffle, then the §2 filters on the holdout listens."""
    pre = config.preprocess
    cons = filters.consumption(events.filter(F.col("event_type") == "listen"), pre.min_played_ratio_pct)
    stream = build.to_stream(cons.df, HOLDOUT_LISTEN).unionByName(
        gts.feedback_events(events, config.gts, windows.test_end)
    )
    shuffled = cache.add(build.partition_by_user(stream, config.runtime.spark.shuffle_partitions))
    listens = shuffled.filter(F.col("code") == HOLDOUT_LISTEN)
    track_users = cache.add(filters.recent_track_users(listens, pre.popularity.recent_window))
    pop = filters.popularity(listens, track_users, pre.popularity.min_users)
    lengths = filters.length(pop.df, pre.min_len, pre.max_len)
    return _Streams(
        histories=cache.add(lengths.df),
        gts_events=shuffled.filter(F.col("code") != HOLDOUT_LISTEN),
        filter_counts={"consumption": cons.counts, "popularity": pop.counts, "length": lengths.counts},
    )


def _filter_counts(counts: dict[str, DataFrame]) -> dict[str, dict[str, int | None]]:
    """Every filter's one-row counts, as (filter, count, value) rows fetched in one Spark job."""
    long = [
        df.select(
            F.lit(name).alias("filter"),
            F.explode(F.create_map(*(x for c in df.columns for x in (F.lit(c), F.col(c).cast("long"))))),
        )
        for name, df in counts.items()
    ]
    union = long[0]
    for df in long[1:]:
        union = union.unionByName(df)
    out: dict[str, dict[str, int | None]] = {name: {} for name in counts}
    for r in union.collect():
        out[r["filter"]][r["key"]] = r["value"]
    return out


def _filter_summary(counts: dict[str, dict[str, int | None]]) -> str:
    """``consumption 120 -> 80 listens, ...``: where the listens went, filter by filter."""
    return ", ".join(
        f"{name} {c.get('rows_in') or 0} -> {c.get('rows_out') or 0} listens" for name, c in counts.items()
    )


def run_preprocess(config: Config, spark: SparkSession) -> dict[str, Any]:
    """Compute and stage every output table, then publish them as one snapshot; return a summary."""
    with JobSnapshot(spark, config, job=stats.JOB) as snap:
        return _preprocess(config, spark, snap)


def _preprocess(config: Config, spark: SparkSession, snap: JobSnapshot) -> dict[str, Any]:
    started = time.perf_counter()
    pre = config.preprocess

    def path(table: str) -> str:
        return table_path(config.lake.root, config.dataset.name, table)

    def done(what: str) -> None:
        log.info("preprocess: %s (%.1f s)", what, time.perf_counter() - started)

    if not table_exists(path("events")):
        raise InputError(f"no events table at {path('events')}; run the ingest job first")
    events = snap.read("events")
    # One scan for the scalars. Events at or after test_end fall in no split (docs/temporal-split.md)
    # and are counted; with the default test_end (the largest timestamp plus one) there are none.
    last = config.gts.last_timestamp
    after_end = F.count_if(F.col("timestamp") >= last) if last is not None else F.lit(0)
    listens = F.count_if(F.col("event_type") == "listen")
    max_ts, n_after_end, n_listens = events.agg(F.max("timestamp"), after_end, listens).first()  # type: ignore[misc]
    if max_ts is None:
        raise InputError(f"the events table at {path('events')} is empty")
    if not n_listens:
        # Every sequence and every holdout example is made of listens: nothing to do without them.
        raise InputError(
            f"the events table at {path('events')} holds no listen events (was the listens file empty?); "
            "nothing was written"
        )
    windows = gts.plan_windows(config.gts, int(max_ts))
    log.info("preprocess: GTS windows %s", windows)

    # Each write task opens one file per partition value (90 of them in `sequences`); one task
    # per core keeps files few and large without losing parallelism.
    write_tasks = spark.sparkContext.defaultParallelism
    rows_out: dict[str, int] = {}

    def stage_table(table: str, df: DataFrame, **kwargs: Any) -> Any:
        staged = snap.stage(table, df.coalesce(write_tasks), **kwargs)
        rows_out[table] = staged.rows
        done(f"staged {table} ({staged.rows} rows)")
        return staged

    hp = holdout.HoldoutParams(
        config.seed, tuple(config.holdout.split_ratios), tuple(pre.ks), config.holdout.gt_size
    )
    gp = gts.GtsParams(windows, tuple(config.gts.feedbacks), tuple(pre.ks))
    with _Cache() as cache:
        streams = _user_streams(config, events, windows, cache)
        done("shuffled and filtered")
        sequences = build.map_users(streams.histories, holdout.sequences_fn(hp), schemas.SEQUENCES).unionByName(
            build.map_users(streams.gts_events, gts.sequences_fn(gp), schemas.SEQUENCES)
        )
        stage_table("sequences", sequences)
        outputs = cache.add(
            build.map_users(streams.histories, holdout.outputs_fn(hp), OUTPUT_SCHEMA).unionByName(
                build.map_users(streams.gts_events, gts.outputs_fn(gp), OUTPUT_SCHEMA)
            )
        )
        tag = F.col("tag")
        stage_table("user_splits", outputs.filter(tag == "split").select(*schemas.USER_SPLITS.names))
        stage_table("holdout_examples", outputs.filter(tag == "holdout").select(*schemas.HOLDOUT_EXAMPLES.names))
        stage_table("gts_examples", outputs.filter(tag == "gts").select(*schemas.GTS_EXAMPLES.names))

        rows = stats.count_rows(outputs.filter(tag == "count"))
        protocol_users = {name: value for section, name, value, _ in rows if section == "users"}
        rows += stats.sequence_rows(outputs.filter(tag == "lengths"), outputs.filter(tag == "maxima"), protocol_users, pre.ks)
        filter_counts = _filter_counts(streams.filter_counts)
        for name, counts in filter_counts.items():
            rows += stats.filter_rows(name, counts)
        if not protocol_users.get(HOLDOUT.name):
            raise InputError(
                f"no user is left after the filters ({_filter_summary(filter_counts)}); "
                "relax preprocess.* for this data. Nothing was written"
            )
        rows += stats.window_rows(windows, n_after_end)
        stage_table("stats", stats.stats_frame(spark, rows), replace_where={"job": stats.JOB})
        versions = snap.publish()
    done("committed " + ", ".join(f"{t} v{v}" for t, v in versions.items()))
    counted = {(section, name): value for section, name, value, _ in rows}
    in_histories = int(filter_counts["length"]["rows_out"] or 0)
    unmapped = int(counted.get(("artists", f"{HOLDOUT.name}/unmapped_events"), 0))
    return {
        "events_max_timestamp": int(max_ts),
        "gts_test_end": windows.test_end,
        "gts_events_after_test_end": int(n_after_end),
        "users": int(protocol_users.get(HOLDOUT.name, 0)),
        "listens_in_histories": in_histories,
        "duplicate_listens": int(counted.get(("histories", "duplicate_listens"), 0)),
        "listens_without_artist": f"{unmapped} of {in_histories} ({unmapped / max(in_histories, 1):.1%}): "
        "in track sequences, left out of artist sequences",
        **{f"rows.{table}": rows_out[table] for table in OUTPUT_TABLES},
        **{f"version.{table}": version for table, version in versions.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
