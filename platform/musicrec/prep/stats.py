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

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


# Partial maxima of the distinct-items pass: per (protocol, name, item), the item's largest count
# in any one sequence of an Arrow batch.
ITEM_MAXIMA = pa.schema(
    [pa.field("protocol", pa.string()), pa.field("name", pa.string()), pa.field("item", pa.int64()), pa.field("m", pa.int64())]
)


def item_maxima(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """For each batch of ``sequences`` rows: per (protocol, name, item), the largest number of times
    the item occurs in one row. Counting happens here, in numpy over the batch's flat items, and
    only one row per item and batch leaves it: exploding every element into a Spark row and counting
    (user, item) pairs there took as long as the rest of the job's statistics together."""
    for batch in batches:
        table = pa.Table.from_batches([batch])
        for key in table.group_by(["protocol", "name"]).aggregate([]).to_pylist():
            part = table.filter((pc.field("protocol") == key["protocol"]) & (pc.field("name") == key["name"]))
            rows = Ragged.from_arrow(part["items"])
            if not len(rows.values):
                continue
            low = int(rows.values.min())
            width = int(rows.values.max()) - low + 1
            pairs, counts = np.unique(rows.row_ids() * width + (rows.values - low), return_counts=True)
            items = pairs % width
            # Per item, the last of its counts in ascending order is the largest.
            order = np.lexsort((counts, items))
            items, counts = items[order], counts[order]
            last = np.append(items[1:] != items[:-1], True)
            n = int(last.sum())
            yield pa.RecordBatch.from_arrays(
                [
                    pa.repeat(pa.scalar(key["protocol"], pa.string()), n),
                    pa.repeat(pa.scalar(key["name"], pa.string()), n),
                    pa.array(items[last] + low, pa.int64()),
                    pa.array(counts[last], pa.int64()),
                ],
                schema=ITEM_MAXIMA,
            )


def _distinct_items(sequences: DataFrame, ks: Sequence[int]) -> dict[tuple[str, str, int], int]:
    """Distinct items per (protocol, name, k), from the ``lh`` rows at the smallest k only.

    With m(i) = the largest count of item i in any one user's history: ``lh_k`` and
    ``disc_k`` hold the items with m >= k, ``fam_k`` those with m >= max(k, 2). The ``lh``
    sequence at the smallest k keeps every occurrence of each item counted at least that
    often, so its per-(user, item) counts give m exactly wherever a threshold needs it, and
    only those rows are read (not all six names at every k).
    """
    k_min = min(ks)
    thresholds = sorted({t for k in ks for t in (k, max(k, 2))})
    maxima = (
        sequences.filter(F.col("name").startswith("lh_") & (F.col("k") == k_min))
        .select("protocol", "name", "items")
        .mapInArrow(item_maxima, schemas.spark_schema(ITEM_MAXIMA))
        .groupBy("protocol", "name", "item")
        .agg(F.max("m").alias("m"))
    )
    counts = maxima.groupBy("protocol", "name").agg(*(F.count_if(F.col("m") >= t).alias(f"t{t}") for t in thresholds))
    out: dict[tuple[str, str, int], int] = {}
    for r in counts.collect():
        domain = r["name"].removeprefix("lh_")
        for k in ks:
            out[(r["protocol"], f"lh_{domain}", k)] = r[f"t{k}"]
            out[(r["protocol"], f"disc_{domain}", k)] = r[f"t{k}"]
            out[(r["protocol"], f"fam_{domain}", k)] = r[f"t{max(k, 2)}"]
    return out


def sequence_rows(
    sequences: DataFrame, protocol_users: Mapping[str, float], ks: Sequence[int]
) -> list[StatRow]:
    """Length and item statistics per (protocol, name, k) of a ``sequences`` DataFrame.

    Every protocol of ``protocol_users`` gets rows for every name and k, zeros where no user
    has a non-empty sequence.
    """
    keys = ("protocol", "name", "k")
    lengths = (
        sequences.select(*keys, F.size("items").alias("n"))
        .groupBy(*keys)
        .agg(
            F.count(F.lit(1)).alias("users"),
            F.sum("n").alias("elements"),
            F.max("n").alias("max_len"),
            F.percentile("n", F.lit(0.5)).alias("median_len"),
            F.percentile("n", F.lit(0.9)).alias("p90_len"),
        )
    )
    found = {(r["protocol"], r["name"], r["k"]): r for r in lengths.collect()}
    items = _distinct_items(sequences, ks)
    rows: list[StatRow] = []
    for protocol, total in sorted(protocol_users.items()):
        for name in SEQUENCE_NAMES:
            for k in ks:
                r = found.get((protocol, name, k))
                users = r["users"] if r else 0
                values = {
                    "users": users,
                    "items": items.get((protocol, name, k), 0),
                    "elements": r["elements"] if r else 0,
                    "mean_len": r["elements"] / users if r else 0.0,
                    "median_len": r["median_len"] if r else 0.0,
                    "p90_len": r["p90_len"] if r else 0.0,
                    "max_len": r["max_len"] if r else 0,
                    "empty_users": total - users,
                }
                prefix = f"{protocol}/{name}/k={k}"
                rows += [("sequences", f"{prefix}/{key}", float(v), "") for key, v in values.items()]
    return rows


def stats_frame(spark: SparkSession, rows: Iterable[StatRow]) -> DataFrame:
    return spark.createDataFrame([(*row, JOB) for row in sorted(rows)], schemas.spark_schema(schemas.STATS))
