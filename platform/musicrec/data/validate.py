"""Row validation as pure Spark transforms (docs/data.md, "Bad input").

:func:`flag_events` and :func:`flag_mapping` add a ``reason`` column: null for a good row, else
the name of the first failing check, in the order the check lists below give. Every check is a
Spark SQL expression (no Python UDF), so flagging costs one projection inside whatever scan
reads the rows. :func:`clean_events` / :func:`clean_mapping` then keep the good rows in the
output types, and :func:`quarantined` keeps the bad ones with their reason and raw values.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from musicrec.contract import EVENT_TYPES

# Ids must fit a signed 32-bit int once read (Yambda stores uint32).
INT32_MAX = 2**31 - 1
Check = tuple[str, Column]


def _out_of_int32(column: str) -> Column:
    return (F.col(column) < 0) | (F.col(column) > INT32_MAX)


def event_checks(timestamp_min: int, timestamp_max: int) -> list[Check]:
    """The event checks in the order they are applied: keys present, known type, values in range."""
    return [
        ("null_uid", F.col("uid").isNull()),
        ("null_item_id", F.col("item_id").isNull()),
        ("null_timestamp", F.col("timestamp").isNull()),
        ("unknown_event_type", F.col("event_type").isNull() | ~F.col("event_type").isin(*EVENT_TYPES)),
        ("uid_out_of_range", _out_of_int32("uid")),
        ("item_id_out_of_range", _out_of_int32("item_id")),
        (
            "timestamp_out_of_range",
            (F.col("timestamp") < timestamp_min) | (F.col("timestamp") > timestamp_max),
        ),
        # The events table holds a non-null boolean: any other value would change meaning silently.
        ("invalid_is_organic", F.col("is_organic").isNull() | ~F.col("is_organic").isin(0, 1)),
        # Optional values (null is fine) that must still fit the output's int columns.
        ("played_ratio_pct_out_of_range", _out_of_int32("played_ratio_pct")),
        ("track_length_seconds_out_of_range", _out_of_int32("track_length_seconds")),
    ]


def mapping_checks(owner: str) -> list[Check]:
    """Checks for a mapping row ``(owner, item_id)``, e.g. ``owner="artist_id"``."""
    return [
        (f"null_{owner}", F.col(owner).isNull()),
        ("null_item_id", F.col("item_id").isNull()),
        (f"{owner}_out_of_range", _out_of_int32(owner)),
        ("item_id_out_of_range", _out_of_int32("item_id")),
    ]


def first_failing(checks: Sequence[Check]) -> Column:
    """The name of the first check that holds, else null (a null condition counts as passing)."""
    reason = F.when(checks[0][1], F.lit(checks[0][0]))
    for name, condition in checks[1:]:
        reason = reason.when(condition, F.lit(name))
    return reason


def flag_events(events: DataFrame, *, timestamp_min: int, timestamp_max: int) -> DataFrame:
    """``events`` (the canonical frame of :mod:`musicrec.data.yambda.reader`) plus ``reason``."""
    return events.withColumn("reason", first_failing(event_checks(timestamp_min, timestamp_max)))


def flag_mapping(mapping: DataFrame, owner: str) -> DataFrame:
    return mapping.withColumn("reason", first_failing(mapping_checks(owner)))


def clean_events(flagged: DataFrame) -> DataFrame:
    """The good rows in the events table's types (the checks guarantee every cast fits)."""
    return flagged.where(F.col("reason").isNull()).select(
        F.col("uid").cast("int"),
        F.col("item_id").cast("int"),
        F.col("timestamp").cast("bigint"),
        F.col("event_type"),
        (F.col("is_organic") == 1).alias("is_organic"),
        F.col("played_ratio_pct").cast("int"),
        F.col("track_length_seconds").cast("int"),
    )


def clean_mapping(flagged: DataFrame, owner: str) -> DataFrame:
    return flagged.where(F.col("reason").isNull()).select(
        F.col(owner).cast("int"), F.col("item_id").cast("int")
    )


def quarantined(flagged: DataFrame) -> DataFrame:
    """The rejected rows: ``source_file``, ``reason``, then the raw columns as read (integers as bigint)."""
    raw = [c for c in flagged.columns if c not in ("source_file", "reason")]
    return flagged.where(F.col("reason").isNotNull()).select("source_file", "reason", *raw)
