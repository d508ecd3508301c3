"""One job's writes to several tables of a dataset, published together (see :mod:`manifest`).

::

    with JobSnapshot(spark, config, job="preprocess") as snap:
        snap.stage("sequences", df, ...)     # computed once, written, not yet visible
        ...
        versions = snap.publish()           # commit every table, then one manifest row per table

Leaving the block by an exception (or never calling :meth:`publish`) deletes this job's
uncommitted staged files; a publish removes what earlier failed or killed runs left
(:mod:`files`); table versions it already committed stay unpublished, invisible
to readers, and the next job that writes such a table first restores it to its published
version, so that a partial overwrite (``replace_where``) never builds on them.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from musicrec.config import Config
from musicrec.lake import delta, files, manifest
from musicrec.lake.tables import PARQUET_SETTINGS, PARTITIONING, table_path

log = logging.getLogger(__name__)


class JobSnapshot:
    def __init__(
        self, spark: SparkSession, config: Config, *, job: str, metadata: dict[str, str] | None = None
    ) -> None:
        self.spark = spark
        self.config = config
        self.job = job
        self.run_id = (metadata or {}).get("run_id") or uuid.uuid4().hex
        self.metadata = {**(metadata or {}), "job": job, "run_id": self.run_id}
        self.dataset_dir = posixpath.dirname(table_path(config.lake.root, config.dataset.name, "events"))
        self.staged: dict[str, delta.Staged] = {}
        self.committed: dict[str, int] = {}
        self.leftovers: dict[str, set[str]] = {}  # untracked files found before staging
        self.unpublished: dict[str, set[str]] = {}  # files only unpublished versions added
        self.read_version: int | None = None
        self.published: dict[str, int] | None = None

    def __enter__(self) -> JobSnapshot:
        # What this job is based on: the snapshot it reads, and the manifest version it must publish against.
        self.read_version = manifest.manifest_version(self.dataset_dir)
        self._pins = manifest.published(self.dataset_dir, as_of=self.read_version)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.published is None:
            for table, staged in self.staged.items():
                if table not in self.committed:
                    delta.discard(staged)
            if exc_type is None:
                log.warning("%s run %s ended without publishing its tables", self.job, self.run_id)

    def path(self, table: str) -> str:
        return table_path(self.config.lake.root, self.config.dataset.name, table)

    def read(self, table: str) -> DataFrame:
        """An input table as of the snapshot this job is based on."""
        return delta.read_table(self.spark, self.path(table), version=self._pins.get(table))

    def _base_version(self, table: str) -> int:
        """The version this job's write of ``table`` is based on: the published one.

        A later, unpublished version (a failed job's) is first rolled back to the published
        content, so that the new version never carries it (e.g. the rows a ``replace_where``
        keeps)."""
        path = self.path(table)
        current = delta.current_version(path)
        pinned = self._pins.get(table)
        if pinned is None or current == pinned:
            return current
        log.info("%s: restoring version %d (published) over unpublished version %d", path, pinned, current)
        # The unpublished versions' own files: their jobs began before this one, so can never publish them.
        added = set().union(*(files.active_files(path, v) for v in range(pinned + 1, current + 1)))
        self.unpublished[table] = added - files.referenced_files(path, up_to=pinned)
        return delta.restore(self.spark, path, pinned, writer=self.config.lake.writer, read_version=current)

    def stage(self, table: str, df: DataFrame, **kwargs: Any) -> delta.Staged:
        if table in self.staged:
            raise ValueError(f"{self.job} stages {table} twice")
        self.leftovers[table] = files.untracked_files(self.path(table))
        self.staged[table] = delta.stage(
            self.spark,
            df,
            self.path(table),
            partition_by=PARTITIONING[table],
            parquet_settings=PARQUET_SETTINGS.get(table),
            writer=self.config.lake.writer,
            read_version=self._base_version(table),
            metadata=self.metadata,
            **kwargs,
        )
        return self.staged[table]

    def publish(self) -> dict[str, int]:
        """Commit every staged table, then publish their versions as one snapshot."""
        for table, staged in self.staged.items():
            self.committed[table] = delta.commit(staged)
        versions = dict(self.committed)
        snapshot = manifest.publish(
            self.dataset_dir, versions, read_version=self.read_version, job=self.job, run_id=self.run_id,
            metadata=self.metadata,
        )
        self.published = versions
        for table, leftover in self.leftovers.items():
            # Written by jobs that began before this publish, which therefore can never publish them.
            stale = leftover - files.referenced_files(self.path(table))
            stale |= self.unpublished.get(table, set()) - files.active_files(self.path(table), versions[table])
            if stale:
                log.info("%s: removing %d files that failed runs left", self.path(table), len(stale))
                files.remove(self.path(table), stale)
        log.info("%s run %s published snapshot %d: %s", self.job, self.run_id, snapshot, versions)
        return versions
