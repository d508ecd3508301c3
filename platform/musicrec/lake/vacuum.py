"""``musicrec vacuum``: delete the files that no version inside the retention still needs.

Delta's VACUUM on either path (Spark's ``DeltaTable.vacuum`` with the jars, delta-rs otherwise),
for every table of the dataset. Versions younger than ``vacuum.retention_hours`` stay readable
(time travel); older ones lose their files. A table whose latest version is not its published
one (a failed job's commit, see :mod:`manifest`) is first restored to the published content, so
that the version readers pin is the latest and vacuum never takes its files.
"""

from __future__ import annotations

import logging
from typing import Any

from deltalake import DeltaTable
from pyspark.sql import SparkSession

from musicrec.config import Config
from musicrec.lake import delta, files, manifest
from musicrec.lake.tables import TABLES, absolute, table_path

log = logging.getLogger(__name__)


def run_vacuum(config: Config, spark: SparkSession | None = None) -> dict[str, Any]:
    """Vacuum every table of ``config.dataset.name``; return the files removed (or, dry run, removable) per table.

    Without a Spark session (or without the Delta jars) delta-rs vacuums; with them, Spark.
    """
    retention = config.vacuum.retention_hours
    native = spark is not None and delta.resolve_writer(spark, config.lake.writer) == "spark_delta"
    pins = manifest.published(_dataset_dir(config))
    removed: dict[str, int] = {}
    for table in TABLES:
        path = absolute(table_path(config.lake.root, config.dataset.name, table))
        if not DeltaTable.is_deltatable(path):
            continue
        current = delta.current_version(path)
        pinned = pins.get(table, current)
        if pinned != current and not config.vacuum.dry_run:
            if spark is None:
                DeltaTable(path, version=current).restore(pinned)
            else:
                delta.restore(spark, path, pinned, writer=config.lake.writer, read_version=current)
        before = files.data_files(path)
        if native:
            from delta.tables import DeltaTable as SparkDeltaTable

            # Delta refuses a retention under 7 days unless told: here the user chose it.
            spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")  # type: ignore[union-attr]
            if config.vacuum.dry_run:
                count = spark.sql(f"VACUUM delta.`{path}` RETAIN {retention} HOURS DRY RUN").count()  # type: ignore[union-attr]
            else:
                SparkDeltaTable.forPath(spark, path).vacuum(retention)
                count = len(before - files.data_files(path))
        else:
            count = len(
                DeltaTable(path).vacuum(
                    retention_hours=int(retention), dry_run=config.vacuum.dry_run,
                    enforce_retention_duration=False, full=True,
                )
            )
        removed[table] = count
        log.info("vacuum %s: %d files %s", path, count, "removable" if config.vacuum.dry_run else "removed")
    return {"retention_hours": retention, "dry_run": config.vacuum.dry_run, "files": removed}


def _dataset_dir(config: Config) -> str:
    return table_path(config.lake.root, config.dataset.name, "events").rsplit("/", 1)[0]
