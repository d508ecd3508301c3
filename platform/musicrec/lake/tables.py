"""Where each Delta table of the contract (docs/tables.md) lives, and how it is partitioned."""

from __future__ import annotations

import os
import posixpath

# Partitioning follows the readers: training reads one (protocol, name, k) of `sequences`,
# GTS evaluation one (window, feedback) of `gts_examples`, holdout evaluation one task.
PARTITIONING: dict[str, tuple[str, ...]] = {
    "events": (),
    "quarantine": (),
    "sequences": ("protocol", "name", "k"),
    "user_splits": (),
    "holdout_examples": ("task",),
    "gts_examples": ("window", "feedback"),
    # Each job overwrites only its own rows: `stage(..., replace_where={"job": ...})`.
    "stats": ("job",),
    "recommendations": ("task",),
}
TABLES: tuple[str, ...] = tuple(PARTITIONING)
# Parquet writer settings of a table's files, on both write paths (docs/scaling.md). Sequence
# arrays hold mostly distinct timestamps and per-user positions: parquet-mr's dictionary attempt
# cost 12-14% of the write's CPU at 10M events and made the files larger, not smaller. Format v2
# pages encode integers as DELTA_BINARY_PACKED, which suits increasing timestamps and positions:
# 8% smaller files and ~20% less write CPU at 10M events. Spark (3.3+), delta-rs, pyarrow (Ray
# Data, DuckDB over Arrow) and Polars read them.
PARQUET_SETTINGS: dict[str, dict[str, str]] = {
    "sequences": {"parquet.enable.dictionary": "false", "parquet.writer.version": "v2"}
}


def absolute(path: str) -> str:
    """Local paths become absolute (Spark and delta-rs resolve relative ones differently); URIs stay."""
    return path if "://" in path else os.path.abspath(path)


def split_table_path(path: str) -> tuple[str, str]:
    """``<lake_root>/<dataset>/<table>`` -> (its dataset folder, the table's name)."""
    path = path.rstrip("/")
    return posixpath.dirname(path), posixpath.basename(path)


def table_path(lake_root: str, dataset: str, table: str) -> str:
    """``<lake_root>/<dataset>/<table>``; the table must be one of the contract's names."""
    if table not in PARTITIONING:
        raise ValueError(f"unknown table {table!r}; the lake holds {', '.join(TABLES)}")
    return posixpath.join(lake_root.rstrip("/"), dataset, table)
