"""Column contract of every lake table (docs/tables.md) and of the Yambda input files.

Arrow is the one source: Spark schemas are derived with :func:`spark_schema` (which imports
pyspark only when called, so Arrow, Ray and serving code can use this module without Spark).
Every column is nullable, as Spark's Delta writer makes them, so a table's schema does not flip
with Spark's inferred nullability. Columns may be added, never renamed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

INT_LIST = pa.list_(pa.int32())
LONG_LIST = pa.list_(pa.int64())

EVENTS = pa.schema(
    [
        ("uid", pa.int32()),
        ("item_id", pa.int32()),
        ("artist_id", pa.int32()),  # null if unmapped
        ("album_id", pa.int32()),
        ("timestamp", pa.int64()),  # seconds
        ("event_type", pa.string()),  # one of contract.tasks.EVENT_TYPES
        ("is_organic", pa.bool_()),
        ("played_ratio_pct", pa.int32()),
        ("track_length_seconds", pa.int32()),
    ]
)
# The Yambda files' own types (docs/data.md); the lake widens or narrows them into EVENTS.
YAMBDA = pa.schema(
    [
        ("uid", pa.uint32()),
        ("item_id", pa.uint32()),
        ("timestamp", pa.uint32()),
        ("is_organic", pa.uint8()),
        ("played_ratio_pct", pa.uint16()),
        ("track_length_seconds", pa.uint32()),
        ("event_type", pa.string()),
        ("artist_id", pa.uint32()),
        ("album_id", pa.uint32()),
    ]
)
# source_file and reason, then every raw column of any input as read (integers widened to int64,
# so a row with an out-of-range value can still be shown as it was).
QUARANTINE = pa.schema(
    [
        ("source_file", pa.string()),
        ("reason", pa.string()),
        ("event_type", pa.string()),
        *[(f.name, pa.int64()) for f in YAMBDA if f.name != "event_type"],
    ]
)
SEQUENCES = pa.schema(
    [
        ("protocol", pa.string()),  # contract.tasks.Protocol.name
        ("uid", pa.int32()),
        ("name", pa.string()),  # contract.tasks.SEQUENCE_NAMES
        ("k", pa.int32()),
        ("split", pa.string()),  # holdout: the user's split; gts: train
        ("items", INT_LIST),
        ("timestamps", LONG_LIST),
        ("positions", INT_LIST),  # each element's position in H(u)
    ]
)
USER_SPLITS = pa.schema([("uid", pa.int32()), ("split", pa.string())])
HOLDOUT_EXAMPLES = pa.schema(
    [
        ("uid", pa.int32()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("history_items", INT_LIST),  # the task's domain, before the cutoff
        ("history_timestamps", LONG_LIST),
        ("targets", INT_LIST),  # the gt_size ground-truth events, in order
    ]
)
GTS_EXAMPLES = pa.schema(
    [
        ("uid", pa.int32()),
        ("window", pa.string()),
        ("feedback", pa.string()),
        ("task", pa.string()),
        ("targets", INT_LIST),  # distinct, ascending
    ]
)
# ``job`` (the writing job) is the partition column: each job replaces only its own rows.
STATS = pa.schema(
    [
        ("section", pa.string()),
        ("name", pa.string()),
        ("value", pa.float64()),
        ("detail", pa.string()),
        ("job", pa.string()),
    ]
)
RECOMMENDATIONS = pa.schema(
    [
        ("uid", pa.int32()),
        ("task", pa.string()),
        ("model", pa.string()),
        ("items", INT_LIST),
        ("scores", pa.list_(pa.float32())),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "events": EVENTS,
    "quarantine": QUARANTINE,
    "sequences": SEQUENCES,
    "user_splits": USER_SPLITS,
    "holdout_examples": HOLDOUT_EXAMPLES,
    "gts_examples": GTS_EXAMPLES,
    "stats": STATS,
    "recommendations": RECOMMENDATIONS,
}


def schema(table: str) -> pa.Schema:
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; the lake holds {', '.join(SCHEMAS)}")
    return SCHEMAS[table]


def spark_schema(arrow: pa.Schema | str) -> StructType:
    """The Spark StructType of an Arrow schema or of a lake table's name."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema(arrow) if isinstance(arrow, str) else arrow)
