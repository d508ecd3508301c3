"""The cluster profile's shuffles are sized by adaptive execution (runtime.spark.shuffle_partitions: null):
the user shuffle of preprocessing and the jobs' persisted aggregates are coalesced to their data's size,
where a fixed width runs that many tasks whatever the data (2,000 for a 591-row ingest, before)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pyspark.sql import functions as F

from musicrec.prep.build import partition_by_user
from musicrec.runtime.spark import ADAPTIVE, session_conf

pytestmark = pytest.mark.spark
WIDTH = 40


def widest_stage(spark, label: str, action: Callable[[], object]) -> int:
    """The most tasks of any stage of the Spark jobs ``action`` runs."""
    sc = spark.sparkContext
    sc.setJobGroup(label, label)
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    tracker = sc.statusTracker()
    stages = [s for job in tracker.getJobIdsForGroup(label) for s in tracker.getJobInfo(job).stageIds]
    return max(tracker.getStageInfo(s).numTasks for s in stages if tracker.getStageInfo(s))


def test_the_user_shuffle_without_a_width_is_coalesced(spark):
    stream = spark.range(200).select(
        (F.col("id") % 20).alias("uid"), F.col("id").alias("timestamp"), F.col("id").alias("item_id")
    )
    with session_conf(spark, {"spark.sql.shuffle.partitions": str(WIDTH)}):
        assert widest_stage(spark, "fixed", lambda: partition_by_user(stream, WIDTH).collect()) == WIDTH
        assert widest_stage(spark, "adaptive", lambda: partition_by_user(stream, None).collect()) < WIDTH


def test_a_persisted_aggregate_is_coalesced_with_the_adaptive_settings(spark):
    events = spark.range(600).withColumn("uid", F.col("id") % 30)
    with session_conf(spark, {"spark.sql.shuffle.partitions": str(WIDTH), **ADAPTIVE}):
        counts = events.groupBy("uid").agg(F.count_distinct("id").alias("n")).persist()
        try:
            assert widest_stage(spark, "persisted", counts.count) < WIDTH
        finally:
            counts.unpersist()
