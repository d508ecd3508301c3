"""The SparkSession for a profile.

Under ``spark-submit`` the master and resources come from the submit command and win;
launched from plain Python (local profile, tests) we set a small-machine configuration.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pyspark.sql import SparkSession

from musicrec.config import Config
from musicrec.runtime import hugepages
from musicrec.runtime.jars import local_jars

log = logging.getLogger(__name__)

# Settings that suit a laptop-sized driver; a cluster's spark-submit overrides what it sets.
_LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # Spark's job-commit marker must not land in Delta table folders.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.sql.parquet.compression.codec": "zstd",
}
# runtime.spark.shuffle_partitions=null: every shuffle sized from its data. Spark keeps the width of a
# persisted DataFrame's shuffle unless told it may change it: without that, the jobs' persisted
# aggregates would run spark.sql.shuffle.partitions tasks (2,000 on a cluster) whatever their size.
ADAPTIVE = {
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
}
# Delta's SQL commands (RESTORE, VACUUM) and catalog, once its jars are on the classpath.
_DELTA_SESSION = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def get_spark(config: Config, app_name: str = "musicrec") -> SparkSession:
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    builder = SparkSession.builder.appName(app_name)
    # spark-submit starts the JVM first and hands its gateway to this Python driver; then the
    # master and resources of the submit command must win over the config's.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    spark_cfg = config.runtime.spark
    if config.runtime.profile == "local":
        # Python workers must import musicrec: use this interpreter (the venv), not python3 on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if not submitted:
        builder = builder.master(spark_cfg.master).config("spark.driver.memory", spark_cfg.driver_memory)
    settings = dict(_LOCAL_DEFAULTS)
    if spark_cfg.shuffle_partitions:
        width = str(spark_cfg.shuffle_partitions)
        settings.update({
            "spark.sql.shuffle.partitions": width,
            # Delta's VACUUM lists a table's folders in this many tasks (default 10,000: minutes of
            # empty tasks on a small machine); the shuffle width is the configured parallelism.
            "spark.sql.sources.parallelPartitionDiscovery.parallelism": width,
            # Delta rebuilds a table's state (its log replayed) in this many tasks after every commit
            # and on first read (default 50); the shuffle width suits the machine it runs on.
            "spark.databricks.delta.snapshotPartitions": width,
        })  # fmt: skip
    else:
        settings.update(ADAPTIVE)
    if config.runtime.profile == "cluster":
        # On a cluster the driver must be reachable by executors; only the local profile pins loopback.
        settings.pop("spark.driver.host")
        settings.pop("spark.driver.bindAddress")
    jars = [] if submitted else local_jars()
    if jars:
        # Fetched by `make setup` into the venv; under spark-submit the JVM is already running,
        # and its --jars / --packages (or the cluster's own classpath) decide.
        settings.update({"spark.jars": ",".join(str(j) for j in jars), **_DELTA_SESSION})
    # Cluster executors' Python workers; local ones inherit the driver's environment.
    settings[f"spark.executorEnv.{hugepages.ENV}"] = hugepages.env_value(config.runtime.numpy_hugepages)
    settings.update(spark_cfg.conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN" if config.runtime.log_level != "DEBUG" else "INFO")
    if spark.sparkContext.master.startswith("local"):
        _quiet_task_failures(spark)
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark


def _quiet_task_failures(spark: SparkSession) -> None:
    """Local executors log into the user's console: a failing task (a corrupt input page, say)
    would print its Java stack trace there, then the driver gets the same error as an exception,
    which the job turns into one line or shows in full. The executors' copies are turned off."""
    jvm = spark.sparkContext._jvm  # type: ignore[union-attr]
    off = jvm.org.apache.logging.log4j.Level.OFF
    for name in ("org.apache.spark.executor.Executor", "org.apache.spark.scheduler.TaskSetManager"):
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, off)


@contextmanager
def session_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Set session conf for a block, then put back what was there (unset where nothing was).
    Spark copies the session's conf into the Hadoop conf of every file write, so parquet-mr
    keys set here reach Delta's writer too, which ignores them as DataFrameWriter options."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
