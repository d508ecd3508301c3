"""The Yambda layout, defined once for the reader and the writer (docs/tables.md, "Input").

A Yambda root holds ``flat/<size>/<stem>.parquet`` (one row per event, sorted by uid and time),
optionally ``sequential/<size>/<stem>.parquet`` (one row per user, the other columns as lists in
time order), the two mappings and the audio embeddings. Pure Arrow: no engine is imported here.
"""

from __future__ import annotations

import posixpath

import pyarrow as pa

from musicrec.contract import EVENT_TYPES
from musicrec.contract.schemas import YAMBDA

# File stem → the event_type its rows carry (the separate event files).
EVENT_FILES: dict[str, str] = {f"{t}s": t for t in EVENT_TYPES}
MULTI_EVENT = "multi_event"  # every event type in one file, with an event_type column
ARTIST_MAPPING = "artist_item_mapping"
ALBUM_MAPPING = "album_item_mapping"
EMBEDDINGS = "embeddings"
LAYOUTS = ("flat", "sequential")

# Yambda's type of every column, from the contract (the reader accepts any integer width).
TYPES: dict[str, pa.DataType] = {f.name: f.type for f in YAMBDA}
INTERACTION_COLUMNS = ("uid", "item_id", "timestamp", "is_organic")
LISTEN_COLUMNS = ("played_ratio_pct", "track_length_seconds")
# Dictionary-encoded in the written files (few distinct values).
DICTIONARY_COLUMNS = ("event_type",)


def columns(stem: str) -> tuple[str, ...]:
    """The columns of a file, by stem, in their order in the files."""
    if stem == "listens":
        return (*INTERACTION_COLUMNS, *LISTEN_COLUMNS)
    if stem in EVENT_FILES:
        return INTERACTION_COLUMNS
    if stem == MULTI_EVENT:
        return (*INTERACTION_COLUMNS, *LISTEN_COLUMNS, "event_type")
    if stem == ARTIST_MAPPING:
        return ("artist_id", "item_id")
    if stem == ALBUM_MAPPING:
        return ("album_id", "item_id")
    raise ValueError(f"no Yambda file {stem!r}")


def schema(stem: str) -> pa.Schema:
    """The flat (one row per event or mapping pair) Arrow schema of a file."""
    return pa.schema([(c, TYPES[c]) for c in columns(stem)])


EMBEDDING_SCHEMA = pa.schema(
    [
        ("item_id", TYPES["item_id"]),
        ("embed", pa.list_(pa.float32())),
        ("normalized_embed", pa.list_(pa.float32())),
    ]
)


def event_file(layout: str, size: str, stem: str) -> str:
    """An event file's path relative to the root, e.g. ``flat/50m/listens.parquet``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return posixpath.join(layout, size, f"{stem}.parquet")


def root_file(stem: str) -> str:
    """A file at the root (the mappings, the embeddings), relative to the root."""
    return f"{stem}.parquet"
