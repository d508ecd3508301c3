"""Differential test: the Spark job and the independent Polars reference agree row for row."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import random_events
from musicrec.bench import polars_reference
from musicrec.lake.delta import read_arrow, write_table
from musicrec.lake.tables import table_path
from musicrec.prep import build
from musicrec.prep.job import run_preprocess

# Python workers must import musicrec: use this interpreter, not whatever python3 is on PATH.

KEYS = {
    "sequences": ["protocol", "uid", "name", "k"],
    "user_splits": ["uid"],
    "holdout_examples": ["uid", "task"],
    "gts_examples": ["uid", "window", "feedback", "task"],
}


def _rows(df: pl.DataFrame, table: str) -> list[tuple]:
    columns = sorted(df.columns)
    return [tuple(r) for r in df.select(columns).sort(KEYS[table]).iter_rows()]


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("gts.val_size=0", "gts.net_unlikes=true", "gts.feedbacks=[like]", "preprocess.max_len=40", "seed=7"),
    ],
    ids=["defaults", "netted-likes-no-val"],
)
def test_spark_matches_polars_reference(spark, config_for, monkeypatch, overrides):
    # Tiny Arrow batches and chunks: users span batches and chunks inside the real Spark job.
    monkeypatch.setattr(build, "DEFAULT_CHUNK_ROWS", 64)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "50")
    config = config_for(
        "runtime.spark.shuffle_partitions=2",
        "preprocess.popularity.min_users=3",
        "preprocess.popularity.recent_window=30",
        "preprocess.max_len=150",
        "preprocess.ks=[1,2,3]",
        "holdout.gt_size=4",
        "holdout.split_ratios=[0.5,0.25,0.25]",
        "gts.test_size=172800",
        "gts.val_size=172800",
        "gts.gap=3600",
        *overrides,
    )
    events = random_events(5000, seed=11, days=20)
    write_table(
        spark, spark.createDataFrame(events), table_path(config.lake.root, config.dataset.name, "events")
    )

    try:
        run_preprocess(config, spark)
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    expected = polars_reference.preprocess(pl.from_arrow(events), config)

    for table, reference in expected.items():
        got = pl.from_arrow(read_arrow(table_path(config.lake.root, config.dataset.name, table)))
        got = got.select(reference.columns).cast(dict(reference.schema))
        assert len(reference) > 0, table
        assert _rows(got, table) == _rows(reference, table), table
    # The data exercises what it should: every filter drops something, condensed, GTS and every
    # holdout task's rows exist.
    stats = pl.from_arrow(read_arrow(table_path(config.lake.root, config.dataset.name, "stats")))
    value = dict(zip(stats["name"], stats["value"], strict=True))
    for name in ("consumption", "popularity", "length"):
        assert value[f"{name}/rows_out"] < value[f"{name}/rows_in"], name
    # Sequence statistics agree with the reference's sequences.
    per_key = (
        expected["sequences"]
        .group_by("protocol", "name", "k")
        .agg(
            users=pl.len(),
            elements=pl.col("items").list.len().sum(),
            items=pl.col("items").explode().n_unique(),
            max_len=pl.col("items").list.len().max(),
            median_len=pl.col("items").list.len().quantile(0.5, interpolation="linear"),
            p90_len=pl.col("items").list.len().quantile(0.9, interpolation="linear"),
        )
    )
    for r in per_key.iter_rows(named=True):
        prefix = f"{r['protocol']}/{r['name']}/k={r['k']}"
        for key in ("users", "elements", "items", "max_len", "median_len", "p90_len"):
            assert value[f"{prefix}/{key}"] == pytest.approx(r[key]), (prefix, key)
    sequences = expected["sequences"]
    assert sequences.filter(pl.col("k") == 3).height > 0
    assert set(expected["holdout_examples"]["task"]) == {"T1", "T2", "T3", "T4"}
    assert sequences.filter(pl.col("protocol").str.starts_with("gts_")).height > 0
