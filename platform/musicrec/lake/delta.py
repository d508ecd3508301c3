"""Atomic Delta Lake writes and snapshot reads for Spark DataFrames.

Two write paths, chosen automatically (docs/platform.md, "Delta writes"):

- ``spark_delta``: the Delta Lake jars are on Spark's classpath (every cluster; locally once
  ``make setup`` fetched them), so Spark writes ``format("delta")`` itself.
- ``delta_rs``: no jars. Spark writes plain Parquet into a fresh folder *inside* the table
  folder, then ``deltalake`` (delta-rs) commits those files into the Delta log in one transaction.

A write is split into :func:`stage` and :func:`commit`. Staging computes the DataFrame once
(under the caller's cache) and writes its data: on the delta-rs path as uncommitted files, on the
native path as a Delta commit that no snapshot lists yet (Delta has no public API to commit
files Spark wrote outside its writer). :mod:`musicrec.lake.snapshot` publishes a job's versions
of all its tables at once; readers pin the published versions, so neither kind of staged write
is visible to them until the whole job succeeded.

Every commit is made against the version the writer read (``read_version``) and is never
retried on top of a newer one: if another writer committed in between, the write fails with
:class:`ConcurrentWriteError` instead of silently replacing the other's version.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, create_table_with_add_actions
from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

# The Spark-free reads live in lake.readers; re-exported for the Spark jobs that also read.
from musicrec.lake import provenance
from musicrec.lake.readers import read_arrow as read_arrow
from musicrec.lake.readers import table_exists as table_exists
from musicrec.lake.readers import table_version as table_version
from musicrec.lake.tables import absolute
from musicrec.runtime.spark import session_conf

log = logging.getLogger(__name__)

Writer = Literal["auto", "spark_delta", "delta_rs"]
Mode = Literal["overwrite", "append"]
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_STAGE_PREFIX = "w-"
_ABSENT = -1  # the read version of a table that does not exist yet


class ConcurrentWriteError(RuntimeError):
    """Another writer committed to a table after this one read it; this write was not made."""


@dataclass(frozen=True)
class Staged:
    """A table's data written but not yet published.

    delta-rs path: uncommitted files (``adds``) under one ``w-<id>`` folder of the table.
    Native path: a Delta commit (``version``) that no published snapshot lists yet.
    """

    path: str
    mode: Mode
    partition_by: tuple[str, ...]
    writer: Literal["spark_delta", "delta_rs"]
    arrow_schema: pa.Schema
    read_version: int  # the version this write is based on; _ABSENT for a new table
    adds: tuple[AddAction, ...] = ()
    rows: int = 0
    # Overwrite only the partitions with these values (e.g. one job's rows of `stats`).
    replace_where: tuple[tuple[str, str], ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()  # recorded in the commit (run id, config hash)
    version: int | None = None  # native path: already committed

    @property
    def stage_dir(self) -> str | None:
        """The delta-rs path's folder of staged files."""
        return posixpath.join(self.path, self.adds[0].path.split("/", 1)[0]) if self.adds else None


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


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(absolute(path))


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


def current_version(path: str) -> int:
    """The table's latest version, or ``-1`` if there is no table yet."""
    path = absolute(path)
    return DeltaTable(path).version() if DeltaTable.is_deltatable(path) else _ABSENT


def _conflict(path: str, read_version: int) -> ConcurrentWriteError:
    now = current_version(path)
    return ConcurrentWriteError(
        f"{path}: another writer committed version {now} after this job read version {read_version}; "
        "this job's write was not made (re-run it once the other job has finished)"
    )


def stage(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    *,
    mode: Mode = "overwrite",
    partition_by: Sequence[str] = (),
    writer: Writer = "auto",
    replace_where: dict[str, str] | None = None,
    read_version: int | None = None,
    metadata: dict[str, str] | None = None,
    parquet_settings: Mapping[str, str] | None = None,
) -> Staged:
    """Compute ``df`` once and write its data for ``path`` without publishing it.

    ``replace_where`` (overwrite only) limits the overwrite to the partitions with those values;
    every row of ``df`` must lie inside them. ``read_version`` is the version the job based its
    write on (default: the latest now); the write fails if the table has moved past it.
    ``parquet_settings`` (parquet-mr keys such as ``parquet.enable.dictionary``) apply to this
    write's files only.
    """
    path = absolute(path)
    chosen = resolve_writer(spark, writer)
    arrow_schema = table_schema(df)
    where = tuple(sorted((replace_where or {}).items()))
    if where and (mode != "overwrite" or not {k for k, _ in where} <= set(partition_by)):
        raise ValueError("replace_where needs mode='overwrite' and keys among partition_by")
    base = current_version(path) if read_version is None else read_version
    # The running verb's MLflow run and config hash (lake.provenance) go with every commit.
    meta = tuple(sorted({**provenance.current(), **(metadata or {})}.items()))
    if chosen == "spark_delta":
        with session_conf(spark, parquet_settings or {}):
            return _write_native(df, Staged(path, mode, tuple(partition_by), chosen, arrow_schema, base,
                                            replace_where=where, metadata=meta))

    stage_name = f"{_STAGE_PREFIX}{uuid.uuid4().hex}"
    stage_dir = posixpath.join(path, stage_name)
    with session_conf(spark, parquet_settings or {}):
        df.write.mode("errorifexists").partitionBy(*partition_by).parquet(stage_dir)

    fs, stage_root = _fs(stage_dir)
    adds: list[AddAction] = []
    total_rows = 0
    for info in fs.get_file_info(pafs.FileSelector(stage_root, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        name = posixpath.basename(info.path)
        if not name.endswith(".parquet"):
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
    staged = Staged(path, mode, tuple(partition_by), chosen, arrow_schema, base, tuple(adds), total_rows, where, meta)
    for add in adds:
        outside = {k: v for k, v in where if add.partition_values.get(k) != v}
        if outside:
            discard(staged)
            raise ValueError(f"{path}: rows outside replace_where {dict(where)} (file {add.path})")
    return staged


def _write_native(df: DataFrame, staged: Staged) -> Staged:
    """Spark's own Delta write (atomic by itself), checked to land right on ``read_version``.

    Delta's writer takes no expected version, so the check is made before the write (the table
    has not moved since the job read it) and after it (nobody committed between that check and
    the write's own transaction, which Delta's optimistic concurrency then guards).
    """
    path, base = staged.path, staged.read_version
    if current_version(path) != base:
        raise _conflict(path, base)
    # Delta skips recording a write that adds and removes nothing (an empty table overwritten
    # by no rows); every job's write must still be a version of its own, for the snapshot.
    df.sparkSession.conf.set("spark.databricks.delta.skipRecordingEmptyCommits", "false")
    writer = df.write.format("delta").mode(staged.mode).partitionBy(*staged.partition_by)
    if staged.replace_where:
        writer = writer.option("replaceWhere", " AND ".join(f"{k} = '{v}'" for k, v in staged.replace_where))
    elif staged.mode == "overwrite":
        writer = writer.option("overwriteSchema", "true")
    if staged.metadata:
        writer = writer.option("userMetadata", provenance.commit_metadata(dict(staged.metadata))["userMetadata"])
    try:
        writer.save(path)
    except Py4JJavaError as e:
        if _is_concurrent_modification(df.sparkSession, e):
            raise _conflict(path, base) from e
        raise
    version = DeltaTable(path).version()
    if version != base + 1:
        raise _conflict(path, base)
    entry = DeltaTable(path, version=version).history(1)[0]
    rows = int(entry.get("operationMetrics", {}).get("numOutputRows", 0))
    log.info("wrote %s rows to %s as version %d (spark_delta, unpublished)", rows, path, version)
    return replace(staged, rows=rows, version=version)


def _is_concurrent_modification(spark: SparkSession, error: Py4JJavaError) -> bool:
    """Whether Delta refused a commit because another writer committed first: any subclass of
    its ``DeltaConcurrentModificationException`` (``ProtocolChangedException`` when two writers
    create one table, ``ConcurrentAppendException``, ...), anywhere in the cause chain."""
    base = spark._jvm.org.apache.spark.util.Utils.classForName(  # type: ignore[union-attr]
        "io.delta.exceptions.DeltaConcurrentModificationException", True, False
    )
    cause = error.java_exception
    while cause is not None:
        if base.isInstance(cause):
            return True
        cause = cause.getCause()
    return False


def commit(staged: Staged) -> int:
    """Make staged files the table's next version in one transaction; return that version.

    The transaction is based on ``staged.read_version`` and not retried: if another writer
    committed meanwhile, :class:`ConcurrentWriteError` (the staged files stay for
    :func:`discard`). A native write is committed already.
    """
    if staged.version is not None:
        return staged.version
    schema = Schema.from_arrow(staged.arrow_schema)
    adds = list(staged.adds)
    partition_by = list(staged.partition_by) or None
    props = CommitProperties(custom_metadata=provenance.commit_metadata(dict(staged.metadata)), max_commit_retries=0)
    try:
        if staged.read_version == _ABSENT:
            create_table_with_add_actions(
                staged.path, schema, adds, mode="error", partition_by=partition_by, commit_properties=props
            )
        else:
            filters = [(k, "=", v) for k, v in staged.replace_where] or None
            DeltaTable(staged.path, version=staged.read_version).create_write_transaction(
                adds, mode=staged.mode, schema=schema, partition_by=partition_by, partition_filters=filters,
                commit_properties=props,
            )
    except CommitFailedError as e:
        raise _conflict(staged.path, staged.read_version) from e
    except Exception as e:  # noqa: BLE001 - delta-rs reports "table already exists" as a generic error
        if staged.read_version == _ABSENT and DeltaTable.is_deltatable(staged.path):
            raise _conflict(staged.path, staged.read_version) from e
        raise
    version = staged.read_version + 1
    log.info("committed %s rows to %s as version %d (%s)", staged.rows, staged.path, version, staged.writer)
    return version


def discard(staged: Staged) -> None:
    """Undo a write that will not be published: delete the delta-rs path's staged files; on the
    native path, delete a table this write created (its only version is this job's). A native
    write on an existing table stays an unpublished version, which the next job rolls back."""
    if staged.version is None:
        if staged.stage_dir is not None:
            fs, root = _fs(staged.stage_dir)
            fs.delete_dir(root)
    elif staged.read_version == _ABSENT and current_version(staged.path) == staged.version:
        fs, root = _fs(staged.path)
        fs.delete_dir(root)


def write_table(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    *,
    mode: Mode = "overwrite",
    partition_by: Sequence[str] = (),
    writer: Writer = "auto",
    replace_where: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> int:
    """Write ``df`` as the next version of the Delta table at ``path``; return the version.

    One table on its own (tests, benchmarks); a job's several tables go through
    :class:`musicrec.lake.snapshot.JobSnapshot`.
    """
    staged = stage(spark, df, path, mode=mode, partition_by=partition_by, writer=writer,
                   replace_where=replace_where, metadata=metadata)
    try:
        return commit(staged)
    except Exception:
        discard(staged)
        raise


def restore(spark: SparkSession, path: str, version: int, *, writer: Writer = "auto", read_version: int) -> int:
    """Commit the content of ``version`` as the table's next version (Delta RESTORE); return it."""
    path = absolute(path)
    if resolve_writer(spark, writer) == "spark_delta":
        from delta.tables import DeltaTable as SparkDeltaTable

        if current_version(path) != read_version:
            raise _conflict(path, read_version)
        SparkDeltaTable.forPath(spark, path).restoreToVersion(version)
        if current_version(path) != read_version + 1:
            raise _conflict(path, read_version)
    else:
        try:
            DeltaTable(path, version=read_version).restore(
                version, commit_properties=CommitProperties(max_commit_retries=0)
            )
        except CommitFailedError as e:
            raise _conflict(path, read_version) from e
    return read_version + 1


def read_table(spark: SparkSession, path: str, *, version: int | None = None) -> DataFrame:
    """A Spark DataFrame over one version (default: the published one, :func:`table_version`) of a Delta table.

    With the jars Spark reads ``format("delta")``; without them, :func:`read_listed`.
    """
    path = absolute(path)
    if not DeltaTable.is_deltatable(path):
        raise FileNotFoundError(f"no Delta table at {path}")
    version = table_version(path) if version is None else version
    if delta_jars_available(spark):
        return spark.read.format("delta").option("versionAsOf", version).load(path)
    return read_listed(spark, path, version)


def read_listed(spark: SparkSession, path: str, version: int) -> DataFrame:
    """A table version read by Spark without the Delta jars: the active files come from delta-rs;
    partition columns are recovered from the ``col=value`` folders under each write's folder,
    typed by the table's schema (so a string ``"01"`` stays a string)."""
    path = absolute(path)
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
