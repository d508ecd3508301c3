"""The snapshot manifest: which version of each table the last successful job published.

A job writes several tables and Delta commits one table at a time, so a job that dies between
two commits would leave a mix of new and old tables. Instead, a job's table versions become
visible together: after all its tables are committed, the job appends one row per table
(table, version, job, run id, ...) to ``<lake.root>/<dataset>/_snapshots``, a small Delta table,
in **one** transaction. Readers (:func:`musicrec.lake.delta.read_table`, ``read_arrow``,
``table_version``) read a table at its published version by default, so a failed job, killed
or not, is invisible to them: its commits are versions that no snapshot lists.

The manifest commit is also where concurrent jobs meet: it is made against the manifest
version the job read when it began and never retried, so of two jobs running at once on one
dataset exactly one publishes; the other fails with :class:`SnapshotConflictError`.

Why a manifest rather than rolling committed tables back with RESTORE: a rollback runs in the
failing process and cannot run after a ``kill -9`` or a lost driver, which would then leave the
lake torn with nothing marking it. The manifest needs no clean-up to be correct, and its rows
are the lineage of each table version (run id, config hash).
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Mapping

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from musicrec.lake import provenance
from musicrec.lake.tables import absolute, split_table_path

MANIFEST = "_snapshots"
SCHEMA = pa.schema(
    [
        ("snapshot", pa.int64()),  # the manifest version that published this row
        ("table", pa.string()),
        ("version", pa.int64()),
        ("job", pa.string()),
        ("run_id", pa.string()),
        ("metadata", pa.string()),  # JSON: config hash etc.
        ("published_ms", pa.int64()),
    ]
)


class SnapshotConflictError(RuntimeError):
    """Another job published tables of the same dataset while this one ran."""


def manifest_path(dataset_dir: str) -> str:
    return posixpath.join(dataset_dir.rstrip("/"), MANIFEST)



def manifest_version(dataset_dir: str) -> int | None:
    """The manifest's current version (None: nothing published yet)."""
    path = absolute(manifest_path(dataset_dir))
    return DeltaTable(path).version() if DeltaTable.is_deltatable(path) else None


def published(dataset_dir: str, *, as_of: int | None = None) -> dict[str, int]:
    """Each table's published version, as of manifest version ``as_of`` (default: the latest)."""
    path = absolute(manifest_path(dataset_dir))
    if not DeltaTable.is_deltatable(path):
        return {}
    rows = DeltaTable(path, version=as_of).to_pyarrow_table(columns=["snapshot", "table", "version"]).to_pylist()
    latest: dict[str, tuple[int, int]] = {}
    for r in rows:
        if r["table"] not in latest or r["snapshot"] > latest[r["table"]][0]:
            latest[r["table"]] = (r["snapshot"], r["version"])
    return {table: version for table, (_, version) in latest.items()}


def pinned_version(table_path: str) -> int | None:
    """The published version of the table at ``table_path`` (None: never published by a job)."""
    dataset_dir, name = split_table_path(table_path)
    return published(dataset_dir).get(name)


def publish(
    dataset_dir: str,
    versions: Mapping[str, int],
    *,
    read_version: int | None,
    job: str,
    run_id: str,
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Publish ``versions`` (table -> version) as one snapshot; return the manifest version.

    ``read_version`` is the manifest version the job read when it began (None: no manifest).
    """
    path = absolute(manifest_path(dataset_dir))
    snapshot = 0 if read_version is None else read_version + 1
    now = int(time.time() * 1000)
    meta = json.dumps(dict(metadata or {}), sort_keys=True)
    data = pa.Table.from_pylist(
        [
            {"snapshot": snapshot, "table": t, "version": v, "job": job, "run_id": run_id,
             "metadata": meta, "published_ms": now}
            for t, v in sorted(versions.items())
        ],
        schema=SCHEMA,
    )
    props = CommitProperties(custom_metadata=provenance.commit_metadata({"job": job, "run_id": run_id}), max_commit_retries=0)
    try:
        if read_version is None:
            write_deltalake(path, data, mode="error", commit_properties=props)
        else:
            write_deltalake(DeltaTable(path, version=read_version), data, mode="append", commit_properties=props)
    except Exception as e:  # noqa: BLE001 - CommitFailedError, or "table exists" for a raced first publish
        if isinstance(e, CommitFailedError) or manifest_version(dataset_dir) != read_version:
            raise SnapshotConflictError(
                f"{dataset_dir}: another job published a snapshot (manifest version "
                f"{manifest_version(dataset_dir)}) after this {job} run began at version {read_version}; "
                "this run's tables were not published and readers still see the other job's; re-run it"
            ) from e
        raise
    return snapshot
