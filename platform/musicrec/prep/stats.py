"""The ``stats`` table of a preprocessing run (docs/tables.md, `stats`).

One row per statistic: ``section``, ``name`` (a ``/``-separated path ending in the measure),
``value`` (double), ``detail`` (the reason, where there is one), ``job``. Sections:

- ``filter``: ``<filter>/rows_in|rows_out|users_in|users_out`` and reason counts, per §2 filter.
- ``sequences``: ``<protocol>/<name>/k=<k>/users|items|elements|mean_len|median_len|p90_len|max_len|empty_users``;
  lengths are over users with a non-empty sequence (empty sequences have no row in
  ``sequences``; ``empty_users`` counts them); ``items`` counts distinct items; median and p90
  are exact (linear interpolation).
- ``users``: users per protocol (``holdout``: users of H(u); GTS: users with training events).
- ``artists``: events with no mapped artist (left out of artist sequences), per protocol.
- ``histories``: ``duplicate_listens``, listens of H(u) identical in (uid, item_id, timestamp) to
  the one before (kept: each is a listen).
- ``holdout``: ``users/<split>`` and ``<task>/<split>/evaluated|skipped_*``.
- ``gts``: ``boundaries/*`` in seconds, ``events_at_or_after_test_end`` (all event types; they
  belong to no split), and ``<window>/<feedback>/...`` user and target counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from musicrec.arrays import Ragged
from musicrec.contract import SEQUENCE_NAMES, schemas
from musicrec.prep.gts import Windows

StatRow = tuple[str, str, float, str]
JOB = "preprocess"
_REASONS = {
    "rows_null_ratio": "played_ratio_pct is null",
    "rows_below_min_ratio": "played_ratio_pct < preprocess.min_played_ratio_pct",
    "tracks_in_recent_windows": "tracks in at least one user's recent window",
    "tracks_kept": "tracks with at least preprocess.popularity.min_users users in their recent windows",
    "users_below_min_len": "fewer than preprocess.min_len listens",
    "rows_truncated_max_len": "older than the most recent preprocess.max_len listens",
}


def filter_rows(name: str, counts: Mapping[str, int | None]) -> list[StatRow]:
    return [
        ("filter", f"{name}/{key}", float(value or 0), _REASONS.get(key, "")) for key, value in counts.items()
    ]


def count_rows(counts: DataFrame) -> list[StatRow]:
    """Sum the per-chunk partial counts (``section``, ``name``, ``detail``, ``value``) of the examples pass."""
    summed = counts.groupBy("section", "name", "detail").agg(F.sum("value").alias("value"))
    return [(r["section"], r["name"], float(r["value"]), r["detail"]) for r in summed.collect()]


def window_rows(windows: Windows, events_after_end: int) -> list[StatRow]:
    """The window boundaries, and how many events lie at or after ``test_end`` (in no split, §7)."""
    rows: list[StatRow] = [
        ("gts", "events_at_or_after_test_end", float(events_after_end), "timestamp >= test_end; in no split")
    ]
    for w in windows.windows:
        rows += [
            ("gts", f"boundaries/{w.name}_start", float(w.start), "inclusive"),
            ("gts", f"boundaries/{w.name}_end", float(w.end), "exclusive"),
            (
                "gts",
                f"boundaries/{w.name}_train_end",
                float(w.train_end),
                "exclusive; the stage trains before it",
            ),
        ]
    return rows


THRESHOLD_COUNTS = pa.schema(
    [
        pa.field("protocol", pa.string()),
        pa.field("name", pa.string()),
        pa.field("threshold", pa.int32()),
        pa.field("items", pa.int64()),
    ]
)


def threshold_counts(thresholds: Sequence[int]) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Over ``maxima`` rows with all rows of a (protocol, domain) in one partition: per
    (protocol, domain) and threshold t, how many items have m >= t, m being the largest of the
    partial maxima. One dense array per (protocol, domain), indexed by item id, merges them."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        merged: dict[tuple[str, str], np.ndarray] = {}
        for batch in batches:
            items, maxima = Ragged.from_arrow(batch.column("items")), Ragged.from_arrow(batch.column("maxima"))
            for row, (protocol, name) in enumerate(
                zip(batch.column("protocol").to_pylist(), batch.column("name").to_pylist(), strict=True)
            ):
                ids, m = items[row], maxima[row]
                if not len(ids):
                    continue
                acc = merged.get((protocol, name), np.zeros(0, dtype=np.int32))
                if int(ids.max()) >= len(acc):
                    acc = np.concatenate([acc, np.zeros(int(ids.max()) + 1 - len(acc), dtype=np.int32)])
                    merged[(protocol, name)] = acc
                np.maximum.at(acc, ids, m)
        rows = [(p, n, t, int((acc >= t).sum())) for (p, n), acc in merged.items() for t in thresholds]
        if rows:
            yield pa.RecordBatch.from_pylist(
                [dict(zip(THRESHOLD_COUNTS.names, r, strict=True)) for r in rows], schema=THRESHOLD_COUNTS
            )

    return run


def _distinct_items(maxima: DataFrame, ks: Sequence[int]) -> dict[tuple[str, str, int], int]:
    """Distinct items per (protocol, name, k) from the partial ``maxima`` rows of
    :class:`musicrec.prep.build.SequenceStats`: with m(i) = the largest count of item i in one
    user's history, ``lh_k`` and ``disc_k`` hold the items with m >= k, ``fam_k`` those with
    m >= max(k, 2). The few rows (one per partition and (protocol, domain), each of two
    arrays) are brought together by (protocol, domain) and merged in numpy: exploding them
    into a Spark row per item and aggregating took four to five times as long."""
    thresholds = sorted({t for k in ks for t in (k, max(k, 2))})
    counts = maxima.repartition("protocol", "name").mapInArrow(
        threshold_counts(thresholds), schemas.spark_schema(THRESHOLD_COUNTS)
    )
    found = {(r["protocol"], r["name"], r["threshold"]): r["items"] for r in counts.collect()}
    out: dict[tuple[str, str, int], int] = {}
    for protocol, domain in {(p, n) for p, n, _ in found}:
        for k in ks:
            out[(protocol, f"lh_{domain}", k)] = found[(protocol, domain, k)]
            out[(protocol, f"disc_{domain}", k)] = found[(protocol, domain, k)]
            out[(protocol, f"fam_{domain}", k)] = found[(protocol, domain, max(k, 2))]
    return out


def sequence_rows(
    lengths: DataFrame, maxima: DataFrame, protocol_users: Mapping[str, float], ks: Sequence[int]
) -> list[StatRow]:
    """Length and item statistics per (protocol, name, k) of the ``sequences`` table, from the
    partial statistics the examples pass computed with the same masks
    (:class:`musicrec.prep.build.SequenceStats`): ``lengths`` (users per sequence length) and
    ``maxima`` rows. Reading the written table back cost as much again as this whole step.

    Every protocol of ``protocol_users`` gets rows for every name and k, zeros where no user
    has a non-empty sequence.
    """
    keys = ("protocol", "name", "k")
    length, users = F.col("value"), F.col("users")
    summary = lengths.groupBy(*keys).agg(
        F.sum(users).alias("users"),
        F.sum(length * users).alias("elements"),
        F.max(length).alias("max_len"),
        # Exact, with linear interpolation between order statistics, each length counted per user.
        F.percentile(length, F.lit(0.5), users).alias("median_len"),
        F.percentile(length, F.lit(0.9), users).alias("p90_len"),
    )
    found = {(r["protocol"], r["name"], r["k"]): r for r in summary.collect()}
    items = _distinct_items(maxima, ks)
    rows: list[StatRow] = []
    for protocol, total in sorted(protocol_users.items()):
        for name in SEQUENCE_NAMES:
            for k in ks:
                r = found.get((protocol, name, k))
                users_k = r["users"] if r else 0
                values = {
                    "users": users_k,
                    "items": items.get((protocol, name, k), 0),
                    "elements": r["elements"] if r else 0,
                    "mean_len": r["elements"] / users_k if r else 0.0,
                    "median_len": r["median_len"] if r else 0.0,
                    "p90_len": r["p90_len"] if r else 0.0,
                    "max_len": r["max_len"] if r else 0,
                    "empty_users": total - users_k,
                }
                prefix = f"{protocol}/{name}/k={k}"
                rows += [("sequences", f"{prefix}/{key}", float(v), "") for key, v in values.items()]
    return rows


def stats_frame(spark: SparkSession, rows: Iterable[StatRow]) -> DataFrame:
    return spark.createDataFrame([(*row, JOB) for row in sorted(rows)], schemas.spark_schema(schemas.STATS))
