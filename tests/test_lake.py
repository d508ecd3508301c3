"""Delta I/O with real Spark and delta-rs: round trips, versions, atomicity, other readers."""

from __future__ import annotations

import os

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable
from pyspark.sql import types as T

from musicrec.lake import delta
from musicrec.lake.tables import table_path

SCHEMA = T.StructType(
    [
        T.StructField("uid", T.IntegerType()),
        T.StructField("timestamp", T.LongType()),
        T.StructField("is_organic", T.BooleanType()),
        T.StructField("task", T.StringType()),
        T.StructField("items", T.ArrayType(T.IntegerType())),
        T.StructField("timestamps", T.ArrayType(T.LongType())),
        T.StructField("scores", T.ArrayType(T.FloatType())),
        T.StructField("k", T.IntegerType()),
        T.StructField("name", T.StringType()),
    ]
)
ROWS = [
    (1, 10, True, "T1", [1, 2, 3], [100, 200, 300], [0.5, 0.25, 0.125], 1, "disc_track"),
    (2, None, None, None, None, [], [None], 3, "01"),  # a string partition value that looks like a number
    (3, 2**40, False, "T2", [None, 7], [2**33], [], 1, None),  # long beyond int32, null partition value
]


def _sorted(rows):
    return sorted((tuple(r) for r in rows), key=lambda r: r[0])


@pytest.mark.parametrize("partition_by", [(), ("k", "name")], ids=["flat", "partitioned"])
def test_round_trip_every_contract_type(spark, tmp_path, partition_by):
    path = str(tmp_path / "t")
    version = delta.write_table(spark, spark.createDataFrame(ROWS, SCHEMA), path, partition_by=partition_by)
    assert version == 0
    back = delta.read_table(spark, path)
    assert back.schema == SCHEMA
    assert _sorted(back.collect()) == _sorted(ROWS)


def test_same_content_through_deltalake_polars_duckdb_and_spark(spark, tmp_path):
    path = str(tmp_path / "t")
    delta.write_table(spark, spark.createDataFrame(ROWS, SCHEMA), path, partition_by=("k", "name"))
    expected = _sorted(ROWS)
    arrow = DeltaTable(path).to_pyarrow_table()
    cols = SCHEMA.fieldNames()
    as_rows = lambda table: _sorted(zip(*(table.column(c).to_pylist() for c in cols), strict=True))  # noqa: E731
    assert as_rows(arrow) == expected
    assert as_rows(pl.read_delta(path).to_arrow()) == expected
    # DuckDB's delta extension is downloaded at run time (not possible offline); it reads the Arrow dataset.
    dataset = DeltaTable(path).to_pyarrow_dataset()  # noqa: F841 - referenced by name in the SQL below
    assert as_rows(duckdb.sql(f"select {', '.join(cols)} from dataset").fetch_arrow_table()) == expected
    assert _sorted(delta.read_table(spark, path).collect()) == expected


def test_overwrite_makes_a_new_version_and_time_travel_returns_the_first(spark, tmp_path):
    path = str(tmp_path / "t")
    first = spark.createDataFrame(ROWS, SCHEMA)
    second = spark.createDataFrame([(9, 9, True, "T4", [9], [9], [9.0], 5, "fam_artist")], SCHEMA)
    assert delta.write_table(spark, first, path, partition_by=("k",)) == 0
    assert delta.write_table(spark, second, path, partition_by=("k",)) == 1
    assert [r.uid for r in delta.read_table(spark, path).collect()] == [9]
    assert _sorted(delta.read_table(spark, path, version=0).collect()) == _sorted(ROWS)
    # The folder holds both writes; a reader of the latest version lists only the second's files.
    write_dirs = {p for p in os.listdir(path) if p.startswith("w-")}
    assert len(write_dirs) == 2
    active_dirs = {uri.split(path + "/", 1)[1].split("/", 1)[0] for uri in DeltaTable(path).file_uris()}
    assert len(active_dirs) == 1 and active_dirs < write_dirs


def test_no_spark_marker_or_checksum_files_left_in_the_table(spark, tmp_path):
    path = str(tmp_path / "t")
    delta.write_table(spark, spark.createDataFrame(ROWS, SCHEMA), path, partition_by=("k",))
    leftovers = [
        f for root, _, files in os.walk(path) for f in files if f == "_SUCCESS" or f.endswith(".crc") and "_delta_log" not in root
    ]
    assert leftovers == []


def test_death_between_files_and_commit_leaves_the_table_unchanged(spark, tmp_path):
    path = str(tmp_path / "t")
    delta.write_table(spark, spark.createDataFrame(ROWS, SCHEMA), path)
    new = spark.createDataFrame([(7, 7, True, "T3", [7], [7], [7.0], 1, "x")], SCHEMA)
    staged = delta.stage(spark, new, path)  # data files are on disk now ...
    assert staged.rows == 1 and staged.adds
    # ... and the job dies here, before commit(staged).
    assert delta.table_version(path) == 0
    assert _sorted(delta.read_table(spark, path).collect()) == _sorted(ROWS)
    assert DeltaTable(path).to_pyarrow_table().num_rows == len(ROWS)
    # A re-run succeeds and shows exactly the new content.
    assert delta.write_table(spark, new, path) == 1
    assert [r.uid for r in delta.read_table(spark, path).collect()] == [7]


def test_rerun_with_same_input_gives_same_content(spark, tmp_path):
    path = str(tmp_path / "t")
    df = spark.createDataFrame(ROWS, SCHEMA)
    delta.write_table(spark, df, path, partition_by=("k",))
    delta.write_table(spark, df, path, partition_by=("k",))
    assert _sorted(delta.read_table(spark, path, version=1).collect()) == _sorted(
        delta.read_table(spark, path, version=0).collect()
    )


def test_replace_where_overwrites_only_that_partition(spark, tmp_path):
    schema = T.StructType([T.StructField("job", T.StringType()), T.StructField("value", T.DoubleType())])
    path = str(tmp_path / "stats")
    delta.write_table(spark, spark.createDataFrame([("ingest", 1.0)], schema), path, partition_by=("job",))
    delta.write_table(
        spark, spark.createDataFrame([("preprocess", 2.0)], schema), path, partition_by=("job",),
        replace_where={"job": "preprocess"},
    )
    delta.write_table(
        spark, spark.createDataFrame([("preprocess", 3.0)], schema), path, partition_by=("job",),
        replace_where={"job": "preprocess"},
    )
    assert sorted(tuple(r) for r in delta.read_table(spark, path).collect()) == [("ingest", 1.0), ("preprocess", 3.0)]
    with pytest.raises(ValueError, match="outside replace_where"):
        delta.stage(spark, spark.createDataFrame([("ingest", 5.0)], schema), path, partition_by=("job",),
                    replace_where={"job": "preprocess"})


def test_make_setup_put_the_delta_jars_on_sparks_classpath(spark):
    from musicrec.runtime.jars import local_jars, packages

    assert local_jars(), f"no jars for {packages()} in the venv: run `make setup`"
    assert delta.delta_jars_available(spark)
    assert delta.resolve_writer(spark, "auto") == "spark_delta"


def test_reading_a_missing_table_names_the_path(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="no Delta table at"):
        delta.read_table(spark, str(tmp_path / "nope"))


def test_table_paths_follow_the_contract():
    assert table_path("s3://b/lake/", "yambda-50m", "sequences") == "s3://b/lake/yambda-50m/sequences"
    with pytest.raises(ValueError, match="unknown table"):
        table_path("lake", "d", "sequence")


@pytest.mark.parametrize("partition_by", [None, ["k"]], ids=["flat", "partitioned"])
def test_spark_reads_tables_written_by_other_engines(spark, tmp_path, partition_by):
    import pyarrow as pa
    from deltalake import write_deltalake

    path = str(tmp_path / "t")
    data = pa.table({"uid": pa.array([1, 2, 3], pa.int32()), "k": pa.array([1, 3, 1], pa.int32()),
                     "items": pa.array([[1], [], [2, 3]], pa.list_(pa.int32()))})
    write_deltalake(path, data, partition_by=partition_by)
    rows = sorted(tuple(r) for r in delta.read_table(spark, path).collect())
    assert rows == [(1, 1, [1]), (2, 3, []), (3, 1, [2, 3])]
