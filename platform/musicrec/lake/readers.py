"""Reads of lake tables without Spark: Arrow (delta-rs) and Ray Data.

Evaluation, a Ray Train worker or a served model load what they need from here and never
import pyspark. Every read goes through the Delta log, at the version the last successful job
published (:mod:`musicrec.lake.manifest`) unless told another, so readers see one consistent
snapshot and
partition values come from the log (whichever engine wrote the files):

- :func:`read_arrow` / :func:`load_table`: one version of a table as an Arrow table, partition
  filters pushed down by delta-rs;
- :func:`holdout_examples`, :func:`gts_examples`, :func:`load_holdout`, :func:`load_gts`,
  :func:`train_sequences`, :func:`read_training_sequences`: the evaluation examples and training
  sequences, typed (:class:`TaskExamples`, :class:`TrainingSequences`, raw item ids);
- :func:`sequences_dataset`: ``sequences`` rows as a Ray Dataset, with ``ray.data.read_delta``
  (Ray 2.60 builds it from delta-rs's ``to_pyarrow_dataset``, so the active files and the
  typed partition columns come from the log), filtered to a protocol, name, k and split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from musicrec.arrays import Ragged
from musicrec.contract import GTS_TASKS, HOLDOUT, HOLDOUT_TASKS, Protocol, task
from musicrec.lake.manifest import pinned_version, published
from musicrec.lake.tables import absolute, split_table_path, table_path
from musicrec.models.items import rows_by_key

if TYPE_CHECKING:
    import ray.data

Filters = list[tuple[str, str, object]]


def table_exists(path: str) -> bool:
    """Whether readers see a table at ``path``: one a job published, or, in a dataset no job
    has published to (a table from another tool), any Delta table. A table that only a failed
    job's unpublished commits made does not exist for them."""
    path = absolute(path)
    if not DeltaTable.is_deltatable(path):
        return False
    dataset_dir, name = split_table_path(path)
    versions = published(dataset_dir)  # empty exactly when no job has published to the dataset
    return not versions or name in versions


def table_version(path: str) -> int:
    """The version readers see: the one a job last published (see :mod:`manifest`), else the latest."""
    path = absolute(path)
    pinned = pinned_version(path)
    return DeltaTable(path).version() if pinned is None else pinned


def read_arrow(
    path: str,
    *,
    version: int | None = None,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
) -> pa.Table:
    """One version (default: the published one) of a Delta table as an Arrow table, without Spark."""
    path = absolute(path)
    dt = DeltaTable(path, version=table_version(path) if version is None else version)
    return dt.to_pyarrow_table(columns=list(columns) if columns else None, filters=filters)


def _existing(lake_root: str, dataset: str, table: str) -> str:
    path = table_path(lake_root, dataset, table)
    if not table_exists(path):
        raise FileNotFoundError(f"no {table} table at {path}: run `musicrec preprocess` first")
    return path


def load_table(lake_root: str, dataset: str, table: str, filters: Filters | None = None) -> pa.Table:
    """One lake table of the dataset as Arrow (partition filters are pushed down by delta-rs)."""
    return read_arrow(_existing(lake_root, dataset, table), filters=filters)


@dataclass(frozen=True)
class TaskExamples:
    """One task's evaluation users, raw ids: full history in the task's domain and targets."""

    task: str
    uids: np.ndarray
    history: Ragged
    targets: Ragged


def _check_columns(table: pa.Table, name: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")


def _check_tasks(tasks: Sequence[str], allowed: tuple[str, ...], what: str) -> None:
    wrong = [t for t in tasks if t not in allowed]
    if wrong:
        raise ValueError(f"{wrong[0]!r} is not a {what} task; expected some of {allowed}")


def holdout_examples(
    table: pa.Table, split: str = "test", tasks: Sequence[str] = HOLDOUT_TASKS
) -> list[TaskExamples]:
    """Per task, the ``holdout_examples`` rows of ``split``, sorted by uid."""
    _check_columns(table, "holdout_examples", ("uid", "task", "split", "history_items", "targets"))
    _check_tasks(tasks, HOLDOUT_TASKS, "holdout")
    out = []
    for name in tasks:
        rows = table.filter(pc.and_(pc.equal(table["task"], name), pc.equal(table["split"], split)))
        rows = rows.sort_by("uid")
        out.append(
            TaskExamples(
                name,
                rows["uid"].to_numpy().astype(np.int64),
                Ragged.from_arrow(rows["history_items"]),
                Ragged.from_arrow(rows["targets"]).distinct(),
            )
        )
    return out


def gts_examples(
    examples: pa.Table,
    sequences: pa.Table,
    window: str = "test",
    feedback: str = "listen_plus",
    tasks: Sequence[str] = GTS_TASKS,
) -> list[TaskExamples]:
    """Per task, the ``gts_examples`` rows of (window, feedback) joined to the users' lh rows."""
    _check_columns(examples, "gts_examples", ("uid", "window", "feedback", "task", "targets"))
    _check_columns(sequences, "sequences", ("protocol", "uid", "name", "k", "items"))
    _check_tasks(tasks, GTS_TASKS, "GTS")
    protocol = Protocol.gts(window, feedback).name
    chosen = examples.filter(
        pc.and_(pc.equal(examples["window"], window), pc.equal(examples["feedback"], feedback))
    )
    out = []
    for name in tasks:
        history_name = task(name).history
        rows = chosen.filter(pc.equal(chosen["task"], name)).sort_by("uid")
        uids = rows["uid"].to_numpy().astype(np.int64)
        lh = sequences.filter(
            pc.and_(
                pc.and_(pc.equal(sequences["protocol"], protocol), pc.equal(sequences["name"], history_name)),
                pc.equal(sequences["k"], 1),
            )
        )
        lh_uids = lh["uid"].to_numpy().astype(np.int64)
        if len(np.unique(lh_uids)) != len(lh_uids):
            raise ValueError(f"sequences has several {history_name} rows for one user under {protocol}")
        # Users without an lh row (e.g. no mapped artist) get an empty history.
        history = Ragged.from_arrow(lh["items"]).take(rows_by_key(lh_uids, uids))
        out.append(TaskExamples(name, uids, history, Ragged.from_arrow(rows["targets"]).distinct()))
    return out


def load_holdout(
    lake_root: str, dataset: str, split: str = "test", tasks: Sequence[str] = HOLDOUT_TASKS
) -> list[TaskExamples]:
    table = load_table(lake_root, dataset, "holdout_examples", [("split", "=", split)])
    return holdout_examples(table, split, tasks)


def load_gts(
    lake_root: str,
    dataset: str,
    window: str = "test",
    feedback: str = "listen_plus",
    tasks: Sequence[str] = GTS_TASKS,
) -> list[TaskExamples]:
    examples = load_table(
        lake_root, dataset, "gts_examples", [("window", "=", window), ("feedback", "=", feedback)]
    )
    histories = sorted({task(t).history for t in tasks})
    sequences = load_table(
        lake_root,
        dataset,
        "sequences",
        [("protocol", "=", Protocol.gts(window, feedback).name), ("name", "in", histories)],
    )
    return gts_examples(examples, sequences, window, feedback, tasks)


def sequences_filters(protocol: str, name: str, k: int, split: str | None) -> Filters:
    """Filters selecting one (protocol, name, k) of ``sequences``, and one split if given."""
    Protocol.parse(protocol)
    filters: Filters = [("protocol", "=", protocol), ("name", "=", name), ("k", "=", k)]
    return filters + ([("split", "=", split)] if split is not None else [])


@dataclass(frozen=True)
class TrainingSequences:
    """One (protocol, name, k) of ``sequences``, train split: one row per user (ascending uid),
    raw item ids, timestamps aligned with the items (None when not read), and the table version
    they were read from."""

    uids: np.ndarray
    items: Ragged
    timestamps: Ragged | None
    version: int


def sequences_version(lake_root: str, dataset: str) -> int:
    """The latest version of ``sequences`` (a training run pins it before reading)."""
    return table_version(_existing(lake_root, dataset, "sequences"))


def read_training_sequences(
    lake_root: str,
    dataset: str,
    protocol: str = HOLDOUT.name,
    name: str = "lh_track",
    k: int = 1,
    version: int | None = None,
    *,
    timestamps: bool = True,
) -> TrainingSequences:
    """Training sequences of ``protocol`` at ``version`` (None: the latest): the holdout's train
    users, or every GTS user; ``timestamps=False`` leaves out the timestamps column (half the
    bytes, for the families that learn from the items alone)."""
    path = _existing(lake_root, dataset, "sequences")
    version = table_version(path) if version is None else version
    columns = ["uid", "items", "timestamps"] if timestamps else ["uid", "items"]
    table = read_arrow(path, version=version, columns=columns, filters=sequences_filters(protocol, name, k, "train"))
    uids = table["uid"].to_numpy()
    if np.any(uids[1:] <= uids[:-1]):  # files come in no set order; sorting copies every list
        table = table.sort_by("uid")
        uids = table["uid"].to_numpy()
    items = Ragged.from_arrow(table["items"])
    stamps = Ragged.from_arrow(table["timestamps"]) if timestamps else None
    if stamps is not None and not np.array_equal(items.offsets, stamps.offsets):
        raise ValueError(f"sequences ({protocol}, {name}, k={k}): items and timestamps differ in length")
    return TrainingSequences(uids.astype(np.int64), items, stamps, version)


def train_sequences(
    lake_root: str, dataset: str, protocol: str = HOLDOUT.name, name: str = "lh_track", k: int = 1
) -> list[np.ndarray]:
    """Training sequences (raw ids, by uid) of ``protocol``: holdout train users, or every GTS user."""
    return read_training_sequences(lake_root, dataset, protocol, name, k).items.to_lists()


def sequences_dataset(
    lake_root: str,
    dataset: str,
    protocol: str = HOLDOUT.name,
    name: str = "lh_track",
    k: int = 1,
    split: str | None = "train",
    columns: Sequence[str] | None = None,
    version: int | None = None,
) -> ray.data.Dataset:
    """``sequences`` rows of one (protocol, name, k) and split (None: every split) as a Ray Dataset,
    at ``version`` of the table (None: the published one).

    The partition filter goes to the Arrow scanner of each file, which skips files whose
    partition values (from the Delta log) cannot match; ``split`` is a column filter.
    """
    import pyarrow.dataset as ds
    import ray.data

    path = _existing(lake_root, dataset, "sequences")
    expression = None
    for column, _, value in sequences_filters(protocol, name, k, split):
        term = ds.field(column) == value
        expression = term if expression is None else expression & term
    return ray.data.read_delta(
        absolute(path),
        version=table_version(path) if version is None else version,
        columns=list(columns) if columns else None,
        filter=expression,
    )
