"""Atomic Delta Lake writes and snapshot reads for Spark DataFrames.

Two write paths, chosen automatically (spec platform.md, "Delta I/O"):

- ``spark_delta``: the Delta Lake jars are on Spark's classpath, so Spark writes
  ``format("delta")`` itself (a cluster with the jars installed).
- ``delta_rs``: no jars (this workplace: Maven is unreachable and ``delta-spark`` on PyPI ships
  none). Spark writes plain Parquet into a fresh folder *inside* the table folder, then
  ``deltalake`` (delta-rs) commits those files into the Delta log in one transaction.

A write is split into :func:`stage` and :func:`commit` so that a job producing several tables
can stage all of them and commit only once every one of them was computed: a job that dies
before its commits leaves every table exactly as it was. Staged files that were never
committed are invisible, because readers list a version's active files through the log
(never the raw folder, which also holds removed and orphaned files).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema
from deltalake.transaction import AddAction, create_table_with_add_actions
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

# The Spark-free reads live in lake.readers; re-exported for the Spark jobs that also read.
from musicrec.lake.readers import read_arrow as read_arrow
from musicrec.lake.readers import table_exists as table_exists
from musicrec.lake.readers import table_version as table_version

log = logging.getLogger(__name__)

Writer = Literal["auto", "spark_delta", "delta_rs"]
Mode = Literal["overwrite", "append"]
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_STAGE_PREFIX = "w-"


@dataclass(frozen=True)
class Staged:
    """Data files written for a table but not yet committed (delta-rs path), or a deferred native write."""

    path: str
    mode: Mode
    partition_by: tuple[str, ...]
    writer: Literal["spark_delta", "delta_rs"]
    arrow_schema: pa.Schema
    adds: tuple[AddAction, ...] = ()
    rows: int = 0
    # Overwrite only the partitions with these values (e.g. one job's rows of `stats`).
    replace_where: tuple[tuple[str, str], ...] = ()
    native_df: DataFrame | None = field(default=None, compare=False)


def delta_jars_available(spark: SparkSession) -> bool:
    """True when Spark can write ``format("delta")`` (Delta's classes are on the JVM classpath)."""
    # Spark's class loader, which also sees the jars added by spark.jars (the system one does not).
    return bool(spark._jvm.org.apache.spark.util.Utils.classIsLoadable("io.delta.tables.DeltaTable"))  # type: ignore[union-attr]


def resolve_writer(spark: SparkSession, writer: Writer = "auto") -> Literal["spark_delta", "delta_rs"]:
    if writer == "spark_delta" and not delta_jars_available(spark):
        raise RuntimeError(
            "lake.writer=spark_delta but the Delta Lake jars are not on Spark's classpath; "
            "use lake.writer=auto or delta_rs, or start Spark with the delta-spark jars"
        )
    if writer == "auto":
        return "spark_delta" if delta_jars_available(spark) else "delta_rs"
    return writer


def _abs(path: str) -> str:
    """Local paths become absolute (Spark and delta-rs resolve relative ones differently); URIs stay."""
    return path if "://" in path else os.path.abspath(path)


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(_abs(path))


def _partition_values(rel_dir: str, partition_by: Sequence[str]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for segment in rel_dir.split("/"):
        if "=" in segment:
            key, _, raw = segment.partition("=")
            values[key] = None if raw == _HIVE_NULL else unquote(raw)
    missing = set(partition_by) - set(values)
    if missing:
        raise RuntimeError(f"staged file under {rel_dir!r} lacks partition folders {sorted(missing)}")
    return {k: values[k] for k in partition_by}


def _nullable(t: pa.DataType) -> pa.DataType:
    if pa.types.is_list(t):
        return pa.list_(pa.field(t.value_field.name, _nullable(t.value_type), nullable=True))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _nullable(f.type), nullable=True) for f in t])
    return t


def table_schema(df: DataFrame) -> pa.Schema:
    """The Delta schema of ``df``: every column nullable, as Spark's own Delta writer makes it,
    so a table's schema does not flip with Spark's inferred nullability from one run to the next."""
    return pa.schema([pa.field(f.name, _nullable(f.type), nullable=True) for f in to_arrow_schema(df.schema)])


def stage(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    *,
    mode: Mode = "overwrite",
    partition_by: Sequence[str] = (),
    writer: Writer = "auto",
    replace_where: dict[str, str] | None = None,
) -> Staged:
    """Compute ``df`` and write its data files for ``path`` without making them visible.

    ``replace_where`` (overwrite only) limits the overwrite to the partitions with those values;
    every row of ``df`` must lie inside them.
    """
    path = _abs(path)
    chosen = resolve_writer(spark, writer)
    arrow_schema = table_schema(df)
    where = tuple(sorted((replace_where or {}).items()))
    if where and (mode != "overwrite" or not {k for k, _ in where} <= set(partition_by)):
        raise ValueError("replace_where needs mode='overwrite' and keys among partition_by")
    if chosen == "spark_delta":
        # Spark's Delta writer is itself atomic; it runs at commit time.
        return Staged(path, mode, tuple(partition_by), chosen, arrow_schema, replace_where=where, native_df=df)

    stage_name = f"{_STAGE_PREFIX}{uuid.uuid4().hex}"
    stage_dir = posixpath.join(path, stage_name)
    df.write.mode("errorifexists").partitionBy(*partition_by).parquet(stage_dir)

    fs, stage_root = _fs(stage_dir)
    adds: list[AddAction] = []
    total_rows = 0
    for info in fs.get_file_info(pafs.FileSelector(stage_root, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        base = posixpath.basename(info.path)
        if not base.endswith(".parquet"):
            # Spark's commit markers (_SUCCESS) and checksum files (.crc) must not stay in a table folder.
            fs.delete_file(info.path)
            continue
        rel_in_stage = posixpath.relpath(info.path, stage_root)
        with fs.open_input_file(info.path) as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        total_rows += rows
        adds.append(
            AddAction(
                path=posixpath.join(stage_name, rel_in_stage),
                size=info.size,
                partition_values=_partition_values(posixpath.dirname(rel_in_stage), partition_by),
                modification_time=int(info.mtime_ns // 1_000_000) if info.mtime_ns else int(time.time() * 1000),
                data_change=True,
                stats=json.dumps({"numRecords": rows}),
            )
        )
    adds.sort(key=lambda a: a.path)
    for add in adds:
        outside = {k: v for k, v in where if add.partition_values.get(k) != v}
        if outside:
            raise ValueError(f"{path}: rows outside replace_where {dict(where)} (file {add.path})")
    return Staged(path, mode, tuple(partition_by), chosen, arrow_schema, tuple(adds), total_rows, where)


def commit(staged: Staged) -> int:
    """Make staged files the table's new version in one transaction; return that version."""
    if staged.writer == "spark_delta":
        assert staged.native_df is not None
        writer = staged.native_df.write.format("delta").mode(staged.mode).partitionBy(*staged.partition_by)
        if staged.replace_where:
            writer = writer.option("replaceWhere", " AND ".join(f"{k} = '{v}'" for k, v in staged.replace_where))
        elif staged.mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        writer.save(staged.path)
        return DeltaTable(staged.path).version()

    schema = Schema.from_arrow(staged.arrow_schema)
    adds = list(staged.adds)
    partition_by = list(staged.partition_by) or None
    if DeltaTable.is_deltatable(staged.path):
        filters = [(k, "=", v) for k, v in staged.replace_where] or None
        DeltaTable(staged.path).create_write_transaction(
            adds, mode=staged.mode, schema=schema, partition_by=partition_by, partition_filters=filters
        )
    else:
        create_table_with_add_actions(staged.path, schema, adds, mode="error", partition_by=partition_by)
    version = DeltaTable(staged.path).version()
    log.info("committed %s rows to %s as version %d (%s)", staged.rows, staged.path, version, staged.writer)
    return version


def write_table(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    *,
    mode: Mode = "overwrite",
    partition_by: Sequence[str] = (),
    writer: Writer = "auto",
    replace_where: dict[str, str] | None = None,
) -> int:
    """Write ``df`` as a new version of the Delta table at ``path``; return the version."""
    staged = stage(spark, df, path, mode=mode, partition_by=partition_by, writer=writer, replace_where=replace_where)
    return commit(staged)


def read_table(spark: SparkSession, path: str, *, version: int | None = None) -> DataFrame:
    """A Spark DataFrame over one version (default: the latest) of a Delta table.

    With the jars Spark reads ``format("delta")``. Without them the active files come from
    delta-rs; partition columns are recovered from the ``col=value`` folders under each
    write's folder, typed by the table's schema (so a string ``"01"`` stays a string).
    """
    path = _abs(path)
    if not DeltaTable.is_deltatable(path):
        raise FileNotFoundError(f"no Delta table at {path}")
    if delta_jars_available(spark):
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(path)

    dt = DeltaTable(path, version=version)
    spark_schema = from_arrow_schema(pa.schema(dt.schema().to_arrow()))
    by_write: dict[str, list[str]] = {}
    for add_path in dt.get_add_actions(flatten=True).column("path").to_pylist():
        # Our writes sit in one w-<id> folder each; other writers (delta-rs, Polars) put files
        # and col=value folders at the table root, which is then the base for partition discovery.
        top = add_path.split("/", 1)[0]
        base = top if top.startswith(_STAGE_PREFIX) and "/" in add_path else ""
        by_write.setdefault(base, []).append(posixpath.join(path, add_path))
    frames = [
        spark.read.option("basePath", posixpath.join(path, base) if base else path).schema(spark_schema).parquet(*files)
        for base, files in sorted(by_write.items())
    ]
    if not frames:
        return spark.createDataFrame([], spark_schema)
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out.select(*spark_schema.fieldNames())
