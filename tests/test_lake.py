"""Delta I/O with real Spark and delta-rs: round trips, versions, atomicity, other readers.

Every write test runs on both write paths (``writer``): Spark's native ``format("delta")`` with
the jars ``make setup`` fetched, and Spark Parquet files committed by delta-rs.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
import ray
from deltalake import DeltaTable
from pyspark.sql import types as T

from musicrec.lake import delta, files, manifest
from musicrec.lake.snapshot import JobSnapshot
from musicrec.lake.tables import table_path
from musicrec.lake.vacuum import run_vacuum

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


WRITERS = ("spark_delta", "delta_rs")


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(params=WRITERS)
def writer(request):
    return request.param


def _sorted(rows):
    return sorted((tuple(r) for r in rows), key=lambda r: r[0])


@pytest.mark.parametrize("partition_by", [(), ("k", "name")], ids=["flat", "partitioned"])
def test_round_trip_every_contract_type(spark, tmp_path, partition_by, writer):
    path = str(tmp_path / "t")
    version = delta.write_table(
        spark, spark.createDataFrame(ROWS, SCHEMA), path, partition_by=partition_by, writer=writer
    )
    assert version == 0
    back = delta.read_table(spark, path)
    assert back.schema == SCHEMA
    assert _sorted(back.collect()) == _sorted(ROWS)


def test_same_content_through_deltalake_polars_duckdb_ray_and_spark(spark, ray_local, tmp_path, writer):
    import ray.data

    path = str(tmp_path / "t")
    delta.write_table(spark, spark.createDataFrame(ROWS, SCHEMA), path, partition_by=("k", "name"), writer=writer)
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
    assert _sorted(delta.read_listed(spark, path, 0).collect()) == expected  # Spark without the jars
    assert as_rows(pa.concat_tables(ray.get(ray.data.read_delta(path).to_arrow_refs()))) == expected


def test_overwrite_makes_a_new_version_and_time_travel_returns_the_first(spark, tmp_path, writer):
    path = str(tmp_path / "t")
    first = spark.createDataFrame(ROWS, SCHEMA)
    second = spark.createDataFrame([(9, 9, True, "T4", [9], [9], [9.0], 5, "fam_artist")], SCHEMA)
    assert delta.write_table(spark, first, path, partition_by=("k",), writer=writer) == 0
    assert delta.write_table(spark, second, path, partition_by=("k",), writer=writer) == 1
    assert [r.uid for r in delta.read_table(spark, path).collect()] == [9]
    assert _sorted(delta.read_table(spark, path, version=0).collect()) == _sorted(ROWS)
    assert pl.read_delta(path)["uid"].to_list() == [9]
    # The folder holds both writes' files; the latest version lists only the second's.
    assert len(DeltaTable(path).file_uris()) < len(DeltaTable(path, version=0).file_uris()) + len(
        DeltaTable(path).file_uris())
    assert set(DeltaTable(path).file_uris()).isdisjoint(DeltaTable(path, version=0).file_uris())
    if writer == "delta_rs":
        write_dirs = {p for p in os.listdir(path) if p.startswith("w-")}
        assert len(write_dirs) == 2
        active_dirs = {uri.split(path + "/", 1)[1].split("/", 1)[0] for uri in DeltaTable(path).file_uris()}
        assert len(active_dirs) == 1 and active_dirs < write_dirs


def test_no_spark_marker_or_checksum_files_left_in_the_table(spark, tmp_path, writer):
    path = str(tmp_path / "t")
    delta.write_table(spark, spark.createDataFrame(ROWS, SCHEMA), path, partition_by=("k",), writer=writer)
    outside_log = [(root, f) for root, _, fs in os.walk(path) for f in fs if "_delta_log" not in root]
    assert [f for _, f in outside_log if f == "_SUCCESS"] == []
    checksums = {os.path.relpath(os.path.join(root, f[1:-4]), path) for root, f in outside_log if f.endswith(".crc")}
    if writer == "delta_rs":
        assert checksums == set()
    else:
        # Hadoop's local file system writes a checksum beside each file Spark's Delta writer makes; only those.
        assert checksums == files.active_files(path, 0)


def _frame(spark, uid):
    return spark.createDataFrame([(uid, uid, True, "T3", [uid], [uid], [float(uid)], 1, "x")], SCHEMA)


def _uids(spark, path):
    return sorted(r.uid for r in delta.read_table(spark, path).collect())


def test_death_between_staging_and_publishing_leaves_readers_on_the_last_snapshot(spark, config_for, writer):
    config = config_for(f"lake.writer={writer}")
    with JobSnapshot(spark, config, job="a") as snap:
        snap.stage("events", _frame(spark, 1))
        assert snap.publish() == {"events": 0}
    path = table_path(config.lake.root, config.dataset.name, "events")
    with JobSnapshot(spark, config, job="a") as snap:
        staged = snap.stage("events", _frame(spark, 7))  # computed and written ...
        assert staged.rows == 1
        # ... and the job dies here, before publishing.
    assert delta.table_version(path) == 0
    assert _uids(spark, path) == [1]
    assert delta.read_arrow(path).column("uid").to_pylist() == [1]
    if writer == "delta_rs":
        # Its own uncommitted files went with it.
        assert [d for d in os.listdir(path) if d.startswith("w-")] == [DeltaTable(path).file_uris()[0].split("/")[-2]]
    # A re-run succeeds and shows exactly the new content.
    with JobSnapshot(spark, config, job="a") as snap:
        snap.stage("events", _frame(spark, 7))
        snap.publish()
    assert _uids(spark, path) == [7]


def test_failure_between_second_and_third_table_commit_leaves_the_previous_snapshot(
    spark, config_for, writer, monkeypatch
):
    """Readers of every table see the previous run's content; a re-run publishes the new one."""
    config = config_for(f"lake.writer={writer}")
    tables = ("events", "quarantine", "user_splits")
    paths = {t: table_path(config.lake.root, config.dataset.name, t) for t in tables}

    def run(uid):
        with JobSnapshot(spark, config, job="j") as snap:
            for t in tables:
                snap.stage(t, _frame(spark, uid))
            return snap.publish()

    run(1)
    # Each path commits a table in a different call: the native writer while staging, delta-rs at publish.
    committing = "_write_native" if writer == "spark_delta" else "commit"
    real, calls = getattr(delta, committing), []

    def failing_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure before the third table's commit")
        return real(*args, **kwargs)

    monkeypatch.setattr(delta, committing, failing_third)
    with pytest.raises(RuntimeError, match="injected failure"):
        run(2)
    monkeypatch.undo()
    # Two tables did commit a new version, but no snapshot lists it.
    assert [delta.current_version(paths[t]) for t in tables] == [1, 1, 0]
    for t in tables:
        assert delta.table_version(paths[t]) == 0
        assert _uids(spark, paths[t]) == [1]
        assert delta.read_arrow(paths[t]).column("uid").to_pylist() == [1]
    assert manifest.published(os.path.dirname(paths["events"])) == dict.fromkeys(tables, 0)

    versions = run(2)
    for t in tables:
        assert delta.table_version(paths[t]) == versions[t]
        assert _uids(spark, paths[t]) == [2]
    # Identical to a run that never failed.
    clean = config_for(f"lake.writer={writer}", "dataset.name=clean")
    with JobSnapshot(spark, clean, job="j") as snap:
        for t in tables:
            snap.stage(t, _frame(spark, 2))
        snap.publish()
    for t in tables:
        other = table_path(clean.lake.root, "clean", t)
        assert _sorted(delta.read_table(spark, paths[t]).collect()) == _sorted(delta.read_table(spark, other).collect())


def test_a_partial_overwrite_never_keeps_an_unpublished_version(spark, config_for, writer, monkeypatch):
    """A failed job committed `stats` rows of its own; the next job's replace_where must not carry them."""
    config = config_for(f"lake.writer={writer}")
    schema = T.StructType([T.StructField("value", T.DoubleType()), T.StructField("job", T.StringType())])
    path = table_path(config.lake.root, config.dataset.name, "stats")

    def run(job, value, fail=False):
        with JobSnapshot(spark, config, job=job) as snap:
            snap.stage("stats", spark.createDataFrame([(value, job)], schema), replace_where={"job": job})
            if fail:
                if writer == "delta_rs":  # committed (the native path did while staging), then the job dies
                    snap.committed["stats"] = delta.commit(snap.staged["stats"])
                raise RuntimeError("dies")
            snap.publish()

    run("ingest", 1.0)
    with pytest.raises(RuntimeError, match="dies"):
        run("ingest", 2.0, fail=True)
    assert sorted(tuple(r) for r in delta.read_table(spark, path).collect()) == [(1.0, "ingest")]
    run("preprocess", 3.0)
    assert sorted(tuple(r) for r in delta.read_table(spark, path).collect()) == [(1.0, "ingest"), (3.0, "preprocess")]


def _list_encodings(path: str) -> set[str]:
    """The encodings of every list column's values in every file of a table's latest version."""
    import pyarrow.parquet as pq

    out: set[str] = set()
    for uri in DeltaTable(path).file_uris():
        meta = pq.ParquetFile(uri.removeprefix("file://")).metadata
        for rg in range(meta.num_row_groups):
            for i in range(meta.num_columns):
                column = meta.row_group(rg).column(i)
                if column.path_in_schema.endswith(".list.element"):
                    out.update(column.encodings)
    return out


SEQUENCE_COLUMNS = ("uid", "items", "timestamps", "positions")


def test_a_tables_parquet_settings_apply_to_its_write_only(spark, config_for, tmp_path, writer):
    from musicrec.contract import schemas

    rows = [("holdout", u, "lh_track", 1, "train", [5, 6, 5], [10 * u, 10 * u + 1, 10 * u + 2], [0, 1, 2])
            for u in range(50)]
    frame = spark.createDataFrame(rows, schemas.spark_schema(schemas.SEQUENCES))
    config = config_for(f"lake.writer={writer}")
    # sequences: no dictionary, v2 pages (lake.tables)
    with JobSnapshot(spark, config, job="a") as snap:
        snap.stage("sequences", frame)
        snap.publish()
    assert spark.conf.get("parquet.enable.dictionary", None) is None  # put back as it was
    assert spark.conf.get("parquet.writer.version", None) is None
    plain = str(tmp_path / "plain")
    delta.write_table(spark, frame, plain, writer=writer)  # Parquet's defaults: a dictionary, v1 pages
    sequences = table_path(config.lake.root, config.dataset.name, "sequences")
    encodings = _list_encodings(sequences)
    assert "DELTA_BINARY_PACKED" in encodings and not any("DICTIONARY" in e for e in encodings)
    assert any("DICTIONARY" in e for e in _list_encodings(plain))
    assert "DELTA_BINARY_PACKED" not in _list_encodings(plain)
    expected = _sorted((r[1], *r[5:]) for r in rows)
    assert _sorted(delta.read_table(spark, sequences).select(*SEQUENCE_COLUMNS).collect()) == _sorted(
        delta.read_table(spark, plain).select(*SEQUENCE_COLUMNS).collect()
    ) == expected
    # The other readers of the lake decode the v2 pages too.
    version = DeltaTable(sequences).version()
    assert _sorted(delta.read_listed(spark, sequences, version).select(*SEQUENCE_COLUMNS).collect()) == expected
    for table in (DeltaTable(sequences).to_pyarrow_table(), pl.read_delta(sequences).to_arrow()):
        assert _sorted(zip(*(table.column(c).to_pylist() for c in SEQUENCE_COLUMNS), strict=True)) == expected


def test_rerun_with_same_input_gives_same_content(spark, tmp_path, writer):
    path = str(tmp_path / "t")
    df = spark.createDataFrame(ROWS, SCHEMA)
    delta.write_table(spark, df, path, partition_by=("k",), writer=writer)
    delta.write_table(spark, df, path, partition_by=("k",), writer=writer)
    assert _sorted(delta.read_table(spark, path, version=1).collect()) == _sorted(
        delta.read_table(spark, path, version=0).collect()
    )


def test_replace_where_overwrites_only_that_partition(spark, tmp_path, writer):
    schema = T.StructType([T.StructField("job", T.StringType()), T.StructField("value", T.DoubleType())])
    path = str(tmp_path / "stats")
    delta.write_table(spark, spark.createDataFrame([("ingest", 1.0)], schema), path, partition_by=("job",),
                      writer=writer)
    delta.write_table(
        spark, spark.createDataFrame([("preprocess", 2.0)], schema), path, partition_by=("job",),
        replace_where={"job": "preprocess"}, writer=writer,
    )
    delta.write_table(
        spark, spark.createDataFrame([("preprocess", 3.0)], schema), path, partition_by=("job",),
        replace_where={"job": "preprocess"}, writer=writer,
    )
    assert sorted(tuple(r) for r in delta.read_table(spark, path).collect()) == [("ingest", 1.0), ("preprocess", 3.0)]
    with pytest.raises(Exception, match="outside replace_where|replaceWhere|does not conform|DELTA_REPLACE_WHERE"):
        delta.write_table(spark, spark.createDataFrame([("ingest", 5.0)], schema), path, partition_by=("job",),
                          replace_where={"job": "preprocess"}, writer=writer)
    assert delta.table_version(path) == 2


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
    from deltalake import write_deltalake

    path = str(tmp_path / "t")
    data = pa.table({"uid": pa.array([1, 2, 3], pa.int32()), "k": pa.array([1, 3, 1], pa.int32()),
                     "items": pa.array([[1], [], [2, 3]], pa.list_(pa.int32()))})
    write_deltalake(path, data, partition_by=partition_by)
    rows = sorted(tuple(r) for r in delta.read_table(spark, path).collect())
    assert rows == [(1, 1, [1]), (2, 3, []), (3, 1, [2, 3])]


# One job in its own process: begins its snapshot, waits for the other job to have begun too,
# then writes `events` (uid = its number) and publishes.
_JOB = """
import os, sys, time
from musicrec.config import load_config
from musicrec.lake.snapshot import JobSnapshot
from musicrec.runtime.spark import get_spark
me, lake, writer, barrier = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
config = load_config(overrides=("runtime.spark.master=local[1]", "runtime.spark.driver_memory=1g",
                                "runtime.spark.shuffle_partitions=2", f"lake.root={lake}", f"lake.writer={writer}"))
spark = get_spark(config)
df = spark.createDataFrame([(int(me), 0)], "uid int, item_id int")
df.count()
with JobSnapshot(spark, config, job="ingest") as snap:
    open(os.path.join(barrier, me), "w").close()
    while len(os.listdir(barrier)) < 2:
        time.sleep(0.05)
    snap.stage("events", df)
    print("published", snap.publish())
"""


def test_two_concurrent_jobs_one_wins_the_other_fails_clearly(spark, tmp_path, writer):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    lake, barrier = tmp_path / "lake", tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "platform"), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen([sys.executable, "-c", _JOB, str(me), str(lake), writer, str(barrier)], env=env, cwd=repo,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for me in (1, 2)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in results) == [0, 1], [err[-3000:] for _, _, err in results]
    winner = 1 + [rc for rc, _, _ in results].index(0)
    loser_err = next(err for rc, _, err in results if rc)
    assert "another writer committed" in loser_err or "another job published" in loser_err, loser_err[-3000:]
    path = str(lake / "synthetic-small" / "events")
    # Readers see the winner's write, and only it.
    assert [r.uid for r in delta.read_table(spark, path).collect()] == [winner]
    assert delta.read_arrow(path).column("uid").to_pylist() == [winner]
    # The log is valid: every version reads back the same through delta-rs and Spark.
    latest = DeltaTable(path).version()
    assert [h["version"] for h in DeltaTable(path).history()] == list(range(latest, -1, -1))
    for v in range(latest + 1):
        assert sorted(DeltaTable(path, version=v).to_pyarrow_table().column("uid").to_pylist()) == sorted(
            r.uid for r in delta.read_table(spark, path, version=v).collect()
        )


def test_a_rerun_removes_what_a_killed_run_left_and_vacuum_keeps_time_travel(spark, config_for, writer):
    config = config_for(f"lake.writer={writer}", "vacuum.retention_hours=1")
    path = table_path(config.lake.root, config.dataset.name, "events")

    def publish(uid):
        with JobSnapshot(spark, config, job="a") as snap:
            snap.stage("events", _frame(spark, uid))
            return snap.publish()["events"]

    publish(1)
    before = files.data_files(path)
    killed = JobSnapshot(spark, config, job="a").__enter__()
    killed.stage("events", _frame(spark, 2))  # written (native: committed, unpublished) ...
    del killed  # ... and killed: no clean-up code runs
    left = files.data_files(path) - before
    assert left
    v = publish(3)
    assert files.data_files(path) & left == set()
    assert _uids(spark, path) == [3]

    # Vacuum inside the retention removes nothing a retained version needs: time travel works.
    assert run_vacuum(config, spark)["files"]["events"] == 0
    assert [r.uid for r in delta.read_table(spark, path, version=0).collect()] == [1]
    # With no retention, only the published version's files stay.
    report = run_vacuum(config_for(f"lake.writer={writer}", "vacuum.retention_hours=0"), spark)
    assert report["files"]["events"] > 0
    visible = {f for f in files.data_files(path) if not os.path.basename(f).startswith(".")}  # not Hadoop's .crc
    assert visible == files.active_files(path, v)
    assert _uids(spark, path) == [3]


def test_the_run_summary_counts_commits_by_the_engine_that_wrote_them(tmp_path):
    from deltalake import write_deltalake

    from conftest import delta_commits_by_engine

    table = pa.table({"uid": [1, 2]})
    write_deltalake(str(tmp_path / "test_a" / "t"), table)
    write_deltalake(str(tmp_path / "test_a" / "t"), table, mode="overwrite")
    write_deltalake(str(tmp_path / "test_b" / "nested" / "t"), table)
    # A commit as Spark's Delta writer makes it (its commitInfo names the engine, not a client).
    spark_log = tmp_path / "test_c" / "t" / "_delta_log"
    spark_log.mkdir(parents=True)
    (spark_log / "00000000000000000000.json").write_text(
        '{"commitInfo":{"operation":"WRITE","engineInfo":"Apache-Spark/4.2.0 Delta-Lake/4.4.0"}}\n{"protocol":{}}\n'
    )
    assert delta_commits_by_engine(tmp_path) == {"spark_delta": (1, 1), "delta_rs": (3, 2)}
