"""The ingest job: Yambda files → ``events``, ``quarantine`` and the ``stats`` rows of job ``ingest``.

Order of work, so that a failing run changes nothing (docs/data.md, "Bad input"):

1. open and check every file's presence and schema (no data read);
2. one counting pass over all flagged rows (:func:`input_counts`): rows in, out and quarantined
   per file, kind and reason, plus the kept events per user and per item; fail here if there
   are no events or the quarantined share is above the bound;
3. stage the three tables (data files written, invisible to readers): the events in one more
   pass, joined to the heard items' main artist and album by broadcast; the quarantine in
   another pass only if step 2 found bad rows;
4. commit them and publish the three versions as one snapshot (:mod:`musicrec.lake.snapshot`),
   only once all three are staged.

Rejected rows are listed in :mod:`musicrec.data.validate` (reasons in check order). Stats rows
(section, name, value, detail): ``rows_in`` / ``rows_out`` per kind (event type, ``unknown`` for
event types outside the five, or mapping name) with the source file as detail; ``quarantined``
per reason with ``file:kind`` as detail, and its ``share``; ``events`` for users, items, artists,
albums, items and events without a mapping, items with several artists or albums, time range.
"""

from __future__ import annotations

import logging
import posixpath
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from musicrec.config import Config
from musicrec.contract import EVENT_TYPES
from musicrec.contract.schemas import spark_schema
from musicrec.data import validate
from musicrec.data.yambda.layout import ALBUM_MAPPING, ARTIST_MAPPING
from musicrec.data.yambda.reader import YambdaInput, check_present, open_yambda, read_errors
from musicrec.errors import InputError
from musicrec.lake.snapshot import JobSnapshot
from musicrec.lake.tables import table_path

log = logging.getLogger(__name__)

JOB = "ingest"

# The contract's columns (docs/tables.md), all nullable: see conform().
EVENTS_SCHEMA = spark_schema("events")
QUARANTINE_SCHEMA = spark_schema("quarantine")
STATS_SCHEMA = spark_schema("stats")
# Rows of a multi_event file whose event_type is not one of the five (whatever their first
# failing check) are counted under this name: keying by the raw value could make the tally as
# large as the file.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Tally:
    """The rows of one (source file, kind, reason); kind is the event type or the mapping's name."""

    source_file: str
    kind: str
    reason: str | None
    rows: int
    timestamp_min: int | None = None
    timestamp_max: int | None = None


def main_owner(mapping: DataFrame, owner: str) -> DataFrame:
    """Per item: the smallest ``owner`` id (its main artist or album), and whether it has several.

    ``several_<owner>s`` compares the smallest and largest id rather than counting distinct
    owners, which would cost Spark a second aggregation level.
    """
    return mapping.groupBy("item_id").agg(
        F.min(owner).alias(owner), (F.min(owner) != F.max(owner)).alias(f"several_{owner}s")
    )


def input_counts(events: DataFrame, artists: DataFrame, albums: DataFrame) -> DataFrame:
    """Counts over every flagged input row, at three grains (column ``grain``), in one scan.

    - ``file``: rows per (source_file, kind, reason), with the time range: the validation tally;
    - ``user``: kept events per uid;
    - ``item``: kept events per item_id.

    A grouping-sets aggregation, so the tally, the users and the heard items cost one pass over
    the events together instead of one each.
    """
    kept = F.col("reason").isNull()
    kind = F.when(F.col("event_type").isin(*EVENT_TYPES), F.col("event_type")).otherwise(F.lit(UNKNOWN))
    rows = events.select(
        "source_file",
        kind.alias("kind"),
        "reason",
        "timestamp",
        F.when(kept, F.col("uid")).alias("uid"),
        F.when(kept, F.col("item_id")).alias("item_id"),
    )
    for mapping, name in ((artists, ARTIST_MAPPING), (albums, ALBUM_MAPPING)):
        rows = rows.unionByName(
            mapping.select("source_file", F.lit(name).alias("kind"), "reason"), allowMissingColumns=True
        )
    grain = F.when(F.col("by_user") == 0, F.lit("user")).when(F.col("by_item") == 0, F.lit("item"))
    return (
        rows.groupingSets(
            [["source_file", "kind", "reason"], ["uid"], ["item_id"]],
            "source_file",
            "kind",
            "reason",
            "uid",
            "item_id",
        )
        .agg(
            F.count("*").alias("n"),
            F.min("timestamp").alias("tmin"),
            F.max("timestamp").alias("tmax"),
            F.grouping("uid").alias("by_user"),
            F.grouping("item_id").alias("by_item"),
        )
        .withColumn("grain", grain.otherwise(F.lit("file")))
        .drop("by_user", "by_item")
    )


def tallies_of(counts: DataFrame) -> list[Tally]:
    rows = counts.where(F.col("grain") == "file").collect()
    return sorted(
        (Tally(r["source_file"], r["kind"], r["reason"], r["n"], r["tmin"], r["tmax"]) for r in rows),
        key=lambda t: (t.source_file, t.kind, t.reason or ""),
    )


def heard_items(counts: DataFrame, main_artist: DataFrame, main_album: DataFrame) -> DataFrame:
    """The items with at least one kept event: event count ``n``, main artist and album (null if unmapped)."""
    # Bad rows and mapping rows were counted under a null item_id.
    items = counts.where((F.col("grain") == "item") & F.col("item_id").isNotNull()).select(
        F.col("item_id").cast("int"), "n"
    )
    return items.join(main_artist, "item_id", "left").join(main_album, "item_id", "left")


def with_artist_album(events: DataFrame, items: DataFrame) -> DataFrame:
    """The events table: each event with its item's main artist and album (null where unmapped).

    ``items`` holds only heard items (at most the catalogue, ~1M for Yambda-50M), so it is
    broadcast: the events, the big side, are never shuffled.
    """
    owners = F.broadcast(items.select("item_id", "artist_id", "album_id"))
    return conform(events.join(owners, "item_id", "left"), EVENTS_SCHEMA)


def conform(df: DataFrame, schema: StructType) -> DataFrame:
    """``df`` with ``schema``'s columns, order and types, every column nullable.

    Spark infers a literal as non-null and a column read from a file as nullable, so without this
    the table's schema would change with the input layout (event_type is a literal for the
    separate files, a column in multi_event).
    """
    return df.select(
        *[
            F.when(F.col(f.name).isNotNull(), F.col(f.name).cast(f.dataType)).alias(f.name)
            for f in schema.fields
        ]
    )


def by_kind(tallies: list[Tally], *, quarantined: bool | None = None) -> dict[str, int]:
    """Rows per kind: all of them (``None``), the quarantined ones, or the kept ones."""
    out: dict[str, int] = defaultdict(int)
    for t in tallies:
        if quarantined is None or quarantined == (t.reason is not None):
            out[t.kind] += t.rows
    return dict(out)


def check_quarantine(tallies: list[Tally], event_files: list[str], max_share: float) -> float:
    """The quarantined share of all rows read; raise if there are no events or the share is too high."""
    if not any(t.rows for t in tallies if t.source_file in event_files):
        raise InputError(f"no events to ingest: the event files hold no rows ({', '.join(event_files)})")
    total = sum(t.rows for t in tallies)
    bad = [t for t in tallies if t.reason is not None]
    share = sum(t.rows for t in bad) / total
    if share > max_share:
        worst = sorted(bad, key=lambda t: -t.rows)[:5]
        detail = ", ".join(f"{t.reason} {t.rows} in {t.source_file}" for t in worst)
        raise InputError(
            f"{sum(t.rows for t in bad)} of {total} input rows ({share:.2%}) failed validation, above "
            f"ingest.max_quarantine_share={max_share:g}; nothing was written. Largest: {detail}"
        )
    return share


def stats_rows(
    tallies: list[Tally], share: float, max_share: float, profile: dict[str, int]
) -> list[tuple[str, str, float, str, str]]:
    """The stats table's rows for this job (section, name, value, detail, job)."""
    rows: list[tuple[str, str, float, str]] = []
    rows_in: dict[tuple[str, str], int] = defaultdict(int)
    rows_out: dict[tuple[str, str], int] = defaultdict(int)
    for t in tallies:
        rows_in[(t.kind, t.source_file)] += t.rows
        if t.reason is None:
            rows_out[(t.kind, t.source_file)] += t.rows
        else:
            rows.append(("quarantined", t.reason, float(t.rows), f"{t.source_file}:{t.kind}"))
    for key, n in sorted(rows_in.items()):
        rows.append(("rows_in", key[0], float(n), key[1]))
        rows.append(("rows_out", key[0], float(rows_out[key]), key[1]))
    rows.append(("quarantined", "share", share, f"max_quarantine_share={max_share:g}"))
    kept = [t for t in tallies if t.reason is None and t.timestamp_min is not None]
    if kept:
        rows.append(("events", "timestamp_min", float(min(t.timestamp_min for t in kept)), "seconds"))
        rows.append(("events", "timestamp_max", float(max(t.timestamp_max for t in kept)), "seconds"))
    rows += [("events", name, float(value), "") for name, value in profile.items()]
    return [(*row, JOB) for row in rows]


def profile(counts: DataFrame, items: DataFrame) -> dict[str, int]:
    """Users, items, artists and albums of the kept events, and how many items lack or share a mapping."""
    unmapped = F.col("artist_id").isNull()
    per_item = items.agg(
        F.count("*").alias("items"),
        F.count_distinct("artist_id").alias("artists"),
        F.count_distinct("album_id").alias("albums"),
        F.count_if(unmapped).alias("items_without_artist"),
        F.sum(F.when(unmapped, F.col("n")).otherwise(0)).alias("events_without_artist"),
        F.count_if(F.col("album_id").isNull()).alias("items_without_album"),
        F.count_if("several_artist_ids").alias("items_with_several_artists"),
        F.count_if("several_album_ids").alias("items_with_several_albums"),
    )
    users = counts.where((F.col("grain") == "user") & F.col("uid").isNotNull()).count()
    # Two actions, not one cross join: in a join Spark re-aliases the shared lineage and
    # no longer recognises the cached frames, so it would recompute them from the files.
    row = per_item.first()
    assert row is not None  # a global aggregation always has one row
    return {"users": users, **{k: v or 0 for k, v in row.asDict().items()}}


@contextmanager
def persisted(df: DataFrame) -> Iterator[DataFrame]:
    df = df.persist()
    try:
        yield df
    finally:
        df.unpersist()


def check_input(config: Config, spark: SparkSession) -> None:
    """The files ingest reads are there, checked before its run opens."""
    check_present(spark, config.data)


def run_ingest(config: Config, spark: SparkSession) -> dict[str, Any]:
    """Read, validate and write one Yambda-layout dataset into the lake; return a summary."""
    source: YambdaInput = open_yambda(spark, config.data)
    log.info("ingest: reading %s from %s", ", ".join(source.kinds), config.data.root)

    ing = config.ingest
    events = validate.flag_events(
        source.events, timestamp_min=ing.timestamp_min, timestamp_max=ing.timestamp_max
    )
    artists = validate.flag_mapping(source.artists, "artist_id")
    albums = validate.flag_mapping(source.albums, "album_id")
    # Small (one row per group, user or item) and read up to three times: tally, stats, join.
    # The first pass reads every input row: a damaged page fails it, named by read_errors.
    with read_errors(source), persisted(input_counts(events, artists, albums)) as counts:
        tallies = tallies_of(counts)
        # A file without rows has no group in the tally; it still gets its (zero) rows_in line.
        seen = {t.source_file for t in tallies}
        tallies += [
            Tally(rel, kind, None, 0) for rel, kind in source.kinds.items() if kind and rel not in seen
        ]
        event_files = [
            rel for rel, kind in source.kinds.items() if kind not in (ARTIST_MAPPING, ALBUM_MAPPING)
        ]
        share = check_quarantine(tallies, event_files, ing.max_quarantine_share)

        main_artist = main_owner(validate.clean_mapping(artists, "artist_id"), "artist_id")
        main_album = main_owner(validate.clean_mapping(albums, "album_id"), "album_id")
        # Read by the stats and by the events' join: persisted, the mappings are aggregated once.
        with persisted(heard_items(counts, main_artist, main_album)) as items:
            events_profile = profile(counts, items)
            stats = spark.createDataFrame(
                stats_rows(tallies, share, ing.max_quarantine_share, events_profile), STATS_SCHEMA
            )
            outputs = {
                "events": (with_artist_album(validate.clean_events(events), items), None),
                "quarantine": (quarantined_rows(spark, tallies, events, artists, albums), None),
                "stats": (stats, {"job": JOB}),
            }
            with JobSnapshot(spark, config, job=JOB) as snap:
                for name, (df, where) in outputs.items():
                    snap.stage(name, df, replace_where=where)
                versions = snap.publish()

    event_tallies = [t for t in tallies if t.source_file in event_files]
    summary: dict[str, Any] = {
        "rows_in": by_kind(tallies),
        "rows_out": by_kind(tallies, quarantined=False),
        "quarantined": by_kind(tallies, quarantined=True),
        "quarantine_share": round(share, 6),
        "users": events_profile["users"],
        "items": events_profile["items"],
        "events_without_artist": _unmapped_line(
            events_profile, sum(by_kind(event_tallies, quarantined=False).values())
        ),
        "tables": posixpath.dirname(_path(config, "events")),
        "versions": versions,
    }
    return summary


def _unmapped_line(profile: dict[str, int], events: int) -> str:
    unmapped = profile["events_without_artist"]
    return (
        f"{unmapped} of {events} ({unmapped / max(events, 1):.1%}), on {profile['items_without_artist']} items "
        "absent from the artist mapping: kept, with a null artist_id"
    )


def quarantined_rows(
    spark: SparkSession, tallies: list[Tally], events: DataFrame, artists: DataFrame, albums: DataFrame
) -> DataFrame:
    """The rejected rows of all inputs in QUARANTINE_SCHEMA."""
    if not any(t.reason for t in tallies):
        # Known clean from the tally: skip a full re-scan that would find nothing.
        return spark.createDataFrame([], QUARANTINE_SCHEMA)
    rows = (
        validate.quarantined(events)
        .unionByName(validate.quarantined(artists), allowMissingColumns=True)
        .unionByName(validate.quarantined(albums), allowMissingColumns=True)
    )
    return conform(rows, QUARANTINE_SCHEMA)


def _path(config: Config, table: str) -> str:
    return table_path(config.lake.root, config.dataset.name, table)
