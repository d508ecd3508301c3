"""Open a Yambda-layout dataset (:mod:`.layout`) as Spark DataFrames, after checking it is usable.

Every file is checked before any data is read: presence and non-zero size first (through
Hadoop's FileSystem, so a local path and an object-store URI behave alike and a broken file
never reaches Spark's footer reader, which logs a stack trace), then each required column's
type. All problems are reported together in one :class:`InputError`, one line, naming the
file, the column, the expected and the found type.

The frames come out in one canonical shape whatever the layout, with every integer column
widened to bigint: range checks then need no overflow care, and rows with bad values can still
be shown as read (see :mod:`musicrec.data.validate`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    ByteType,
    DataType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructType,
)

from musicrec.config.schema import DataConfig
from musicrec.data.yambda import layout
from musicrec.data.yambda.layout import (
    ALBUM_MAPPING,
    ARTIST_MAPPING,
    EVENT_FILES,
    INTERACTION_COLUMNS,
    LISTEN_COLUMNS,
    MULTI_EVENT,
)
from musicrec.errors import InputError

# Spark reads uint32 as bigint, uint16 as int and uint8 as smallint; signed integers of any
# width are accepted as equivalent.
_INTEGRAL = (ByteType, ShortType, IntegerType, LongType)
# The canonical events frame every layout is read into (integers as bigint, as read).
EVENT_COLUMNS = ("source_file", "event_type", *INTERACTION_COLUMNS, *LISTEN_COLUMNS)


@dataclass(frozen=True)
class YambdaInput:
    """The dataset's rows, not yet validated; ``source_file`` is relative to the data root."""

    events: DataFrame  # EVENT_COLUMNS
    artists: DataFrame  # source_file, artist_id, item_id
    albums: DataFrame  # source_file, album_id, item_id
    # Every file read → what its rows are: an event type, a mapping's name, or None where a
    # column carries the event type (multi_event).
    kinds: dict[str, str | None]
    root: str = ""  # the data root the files are relative to


@dataclass(frozen=True)
class _File:
    rel: str  # path relative to the data root, as reported and stored in source_file
    columns: tuple[str, ...]
    listed: bool  # sequential layout: one row per user, the columns other than uid are lists
    event_type: str | None  # the separate files' fixed type; None where a column carries it

    @property
    def kind(self) -> str | None:
        stem = posixpath.basename(self.rel).removesuffix(".parquet")
        return stem if stem in (ARTIST_MAPPING, ALBUM_MAPPING) else self.event_type


def required_files(data: DataConfig) -> list[_File]:
    """The files a run with this config reads, events first, then the two mappings."""
    listed = data.layout == "sequential"
    stems = {MULTI_EVENT: None} if data.source == "multi_event" else EVENT_FILES
    files = [
        _File(layout.event_file(data.layout, data.size, stem), layout.columns(stem), listed, event_type)
        for stem, event_type in stems.items()
    ]
    for mapping in (ARTIST_MAPPING, ALBUM_MAPPING):
        files.append(_File(layout.root_file(mapping), layout.columns(mapping), False, None))
    return files


def check_present(spark: SparkSession, data: DataConfig) -> None:
    """Every file the config needs exists and is not empty; else one :class:`InputError` naming them."""
    _check_present(spark, data.root.rstrip("/"), [f.rel for f in required_files(data)])


def open_yambda(spark: SparkSession, data: DataConfig) -> YambdaInput:
    """Check every file the config needs and return lazy frames over them (nothing is computed)."""
    root = data.root.rstrip("/")
    files = required_files(data)
    check_present(spark, data)

    frames: dict[str, DataFrame] = {}
    problems: list[str] = []
    for f in files:
        try:
            df = spark.read.parquet(posixpath.join(root, f.rel))
        except Exception as e:  # present and non-empty, yet Spark cannot read its footer
            problems.append(f"{f.rel}: not a readable Parquet file ({_cause(e)})")
            continue
        problems.extend(_schema_problems(f, df.schema))
        frames[f.rel] = df
    if problems:
        raise InputError(f"{root}: " + "; ".join(problems))

    event_files, (artist_file, album_file) = files[:-2], files[-2:]
    events = [_canonical_events(frames[f.rel], f) for f in event_files]
    union = events[0]
    for frame in events[1:]:
        union = union.unionByName(frame)
    return YambdaInput(
        events=union,
        artists=_canonical_mapping(frames[artist_file.rel], artist_file),
        albums=_canonical_mapping(frames[album_file.rel], album_file),
        kinds={f.rel: f.kind for f in files},
        root=root,
    )


def _check_present(spark: SparkSession, root: str, rels: Sequence[str]) -> None:
    sc = spark.sparkContext
    hadoop_conf = sc._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    missing: list[str] = []
    empty: list[str] = []
    unframed: list[str] = []
    for rel in rels:
        path = sc._jvm.org.apache.hadoop.fs.Path(posixpath.join(root, rel))  # type: ignore[union-attr]
        fs = path.getFileSystem(hadoop_conf)
        if not fs.exists(path):
            missing.append(rel)
            continue
        status = fs.getFileStatus(path)
        if fs.getContentSummary(path).getLength() == 0:
            empty.append(rel)
        elif status.isFile() and not _parquet_framed(fs, path, status.getLen()):
            unframed.append(rel)
    problems = []
    if missing:
        problems.append(f"missing required file{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if empty:
        problems.append(
            f"empty file{'s' if len(empty) > 1 else ''} (0 bytes, not Parquet) {', '.join(empty)}"
        )
    problems += [
        f"{rel}: not a readable Parquet file (no Parquet header or footer: truncated, or not Parquet)"
        for rel in unframed
    ]
    if problems:
        raise InputError(f"{root}: " + "; ".join(problems))


_MAGIC = int.from_bytes(b"PAR1", "big")  # Parquet's magic, as Java's DataInputStream.readInt reads it


def _parquet_framed(fs, path, length: int) -> bool:
    """Whether the file starts and ends with Parquet's magic around a footer that fits.

    Three small reads through Hadoop's FileSystem; Spark's own footer reader would log a Java
    stack trace for a truncated file before failing.
    """
    if length < 12:  # header magic, footer length, footer magic
        return False
    stream = fs.open(path)
    try:
        head = stream.readInt()
        stream.seek(length - 8)
        footer = int.from_bytes((stream.readInt() & 0xFFFFFFFF).to_bytes(4, "big"), "little")
        tail = stream.readInt()
    finally:
        stream.close()
    return head == _MAGIC and tail == _MAGIC and 0 < footer <= length - 12


@contextmanager
def read_errors(source: YambdaInput) -> Iterator[None]:
    """Turn Spark's failure to read one of ``source``'s files (a corrupt data page, say) into an
    :class:`InputError` naming the file; any other error passes unchanged.

    Header and footer are checked before any job runs; a damaged page shows only when a job reads it.
    """
    try:
        yield
    except Exception as e:
        problem = _read_failure(e, source)
        if problem is None:
            raise
        raise InputError(f"{source.root}: {problem}; nothing was written") from None


_FAILED_READ = re.compile(r"Encountered error while reading file (\S+?)\.?\s")
_CAUSED_BY = re.compile(r"^Caused by: [\w.$]+: (.+)$", re.MULTILINE)


def _read_failure(error: Exception, source: YambdaInput) -> str | None:
    text = str(error)
    found = _FAILED_READ.search(text)
    if found is None:
        return None
    uri = found.group(1)
    rel = next((rel for rel in source.kinds if uri.endswith("/" + rel)), None)
    if rel is None:
        return None
    causes = _CAUSED_BY.findall(text)
    detail = causes[0].strip() if causes else "unreadable data"
    return f"{rel}: corrupt Parquet data ({detail})"


def _cause(error: Exception) -> str:
    """The first informative line of a Spark error (Py4J puts a generic one first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("An error occurred while calling")]
    return (useful or lines or [type(error).__name__])[0].lstrip(": ")


def _schema_problems(f: _File, schema: StructType) -> list[str]:
    fields = {field.name: field.dataType for field in schema.fields}
    problems = []
    for column in f.columns:
        listed = f.listed and column != "uid"
        found_name = _resolve_name(column, fields) if listed else column
        if found_name is None or found_name not in fields:
            also = f" (or '{column}s')" if listed else ""
            problems.append(f"{f.rel}: missing column '{column}'{also}, expected {_expected(column, listed)}")
            continue
        found = fields[found_name]
        if not _type_ok(column, found, listed):
            problems.append(
                f"{f.rel}: column '{found_name}' has type {found.simpleString()}, expected {_expected(column, listed)}"
            )
    return problems


def _resolve_name(column: str, fields: dict[str, DataType]) -> str | None:
    """The sequential files name their lists either like the flat columns or in the plural."""
    for name in (column, f"{column}s"):
        if name in fields:
            return name
    return None


def _type_ok(column: str, found: DataType, listed: bool) -> bool:
    if listed:
        if not isinstance(found, ArrayType):
            return False
        found = found.elementType
    if column == "event_type":
        return isinstance(found, StringType)
    return isinstance(found, _INTEGRAL)


def _expected(column: str, listed: bool) -> str:
    yambda = layout.TYPES[column]
    base = "string" if pa.types.is_string(yambda) else f"an integer type (Yambda {yambda})"
    return f"a list of {base}" if listed else base


def _canonical_events(df: DataFrame, f: _File) -> DataFrame:
    if f.listed:
        fields = {field.name: field.dataType for field in df.schema.fields}
        lists = [c for c in EVENT_COLUMNS[1:] if c in f.columns and c != "uid"]
        # arrays_zip keeps the lists aligned element by element, in their stored (time) order,
        # padding a short list with nulls; inline_outer turns a null or empty list into one
        # all-null row instead of dropping the user silently. Either way the row checks see a
        # null key (or is_organic) and quarantine it, counted, like any other bad row.
        zipped = F.arrays_zip(*[F.col(_resolve_name(c, fields) or c).alias(c) for c in lists])
        df = df.select("uid", F.inline_outer(zipped))
    return df.select(*[_column(df, f, c) for c in EVENT_COLUMNS])


def _column(df: DataFrame, f: _File, name: str) -> Column:
    if name == "source_file":
        return F.lit(f.rel).alias(name)
    if name == "event_type":
        value = F.lit(f.event_type) if f.event_type is not None else F.col(name)
        return value.cast("string").alias(name)
    if name in df.columns:
        return F.col(name).cast("bigint").alias(name)
    # Only listens carry these; the other event types have no value.
    return F.lit(None).cast("bigint").alias(name)


def _canonical_mapping(df: DataFrame, f: _File) -> DataFrame:
    return df.select(
        F.lit(f.rel).alias("source_file"), *[F.col(c).cast("bigint").alias(c) for c in f.columns]
    )
