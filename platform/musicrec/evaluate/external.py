"""Scoring predictions made outside the platform against the lake's evaluation examples.

Predictions are a table (or a Parquet file) with columns ``uid`` (integer), ``task``
(string) and ``items`` (list of integer item ids, best first), one row per (uid, task).

Decisions (also in docs/decisions.md):

- A user of the examples with no prediction row for the task is evaluated with an
  empty list (zero hits), so leaving hard users out cannot raise a score.
- Prediction rows whose uid is not among the task's examples are ignored and counted.
- Only the tasks present in the predictions are scored.
- The task's candidate filter (docs/tasks.md §5) is applied to the predictions
  before cutting them to the largest k, so every model competes on the same
  candidates; the number of items it removed is reported.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from musicrec.arrays import Ragged
from musicrec.contract import GTS_TASKS, HOLDOUT_TASKS, PROTOCOL_KINDS, ProtocolKind
from musicrec.evaluate.metrics import METRICS, compute_metrics, key_span
from musicrec.evaluate.ranking import task_filter
from musicrec.lake.readers import TaskExamples, load_gts, load_holdout
from musicrec.models.items import rows_by_key

log = logging.getLogger(__name__)
TaskScores = dict[str, dict[str, float | int]]
ID_MAX = np.iinfo(np.int32).max


def validate_predictions(table: pa.Table) -> None:
    """Raise a ValueError naming the first problem of a predictions table."""
    missing = [c for c in ("uid", "task", "items") if c not in table.column_names]
    if missing:
        raise ValueError(f"predictions lack columns {missing}; expected uid, task, items")
    types = table.schema
    if not pa.types.is_integer(types.field("uid").type):
        raise ValueError(f"predictions column uid must be integer, got {types.field('uid').type}")
    if not (
        pa.types.is_string(types.field("task").type) or pa.types.is_large_string(types.field("task").type)
    ):
        raise ValueError(f"predictions column task must be string, got {types.field('task').type}")
    items_type = types.field("items").type
    if not (
        (pa.types.is_list(items_type) or pa.types.is_large_list(items_type))
        and pa.types.is_integer(items_type.value_type)
    ):
        raise ValueError(f"predictions column items must be a list of integers, got {items_type}")
    for column in ("uid", "task", "items"):
        if table[column].null_count:
            raise ValueError(f"predictions column {column} has {table[column].null_count} null values")
    flat = pc.list_flatten(table["items"])
    if flat.null_count:
        raise ValueError(f"predictions items hold {flat.null_count} null item ids")
    if len(flat) and pc.min(flat).as_py() < 0:
        raise ValueError("predictions items hold a negative item id")
    # The lake's ids are int32: a larger id can match nothing, and would overflow the (user, item)
    # keys of the candidate filter and the metrics.
    for column, values in (("uid", table["uid"]), ("items", flat)):
        if len(values) and pc.max(values).as_py() > ID_MAX:
            raise ValueError(
                f"predictions column {column} holds id {pc.max(values).as_py()}, above {ID_MAX}, "
                "the largest id the lake's int32 ids can hold"
            )
    pairs = table.group_by(["uid", "task"]).aggregate([("uid", "count")])
    dup = pairs.filter(pc.greater(pairs["uid_count"], 1))
    if len(dup):
        row = dup.slice(0, 1).to_pylist()[0]
        raise ValueError(
            f"predictions have {len(dup)} duplicate (uid, task) rows, e.g. uid={row['uid']} task={row['task']}"
        )
    items = Ragged.from_arrow(table["items"])
    repeated = np.flatnonzero(items.distinct().lengths != items.lengths)
    if len(repeated):
        i = int(repeated[0])
        values, counts = np.unique(items[i], return_counts=True)
        raise ValueError(
            f"predictions list an item twice for {len(repeated)} rows, e.g. uid={table['uid'][i].as_py()} "
            f"task={table['task'][i].as_py()} item={int(values[counts > 1][0])}"
        )


def _as_table(predictions: pa.Table | str | Path) -> pa.Table:
    if isinstance(predictions, pa.Table):
        return predictions
    if not Path(predictions).is_file():
        raise FileNotFoundError(f"predictions file {predictions} not found")
    try:
        return pq.read_table(predictions)
    except pa.ArrowException as e:
        raise ValueError(f"predictions file {predictions} is not a readable Parquet file: {e}") from None


def _filtered(items: Ragged, history: Ragged, task: str) -> tuple[Ragged, int]:
    """Items satisfying the task's candidate filter, and how many were removed."""
    kind = task_filter(task)
    if kind is None:
        return items, 0
    # Negative history entries (an unmapped artist) are no item and would break the keys.
    history = history.keep(history.values >= 0)
    span = key_span(len(items), items.values, history.values)
    in_history = np.isin(items.row_ids() * span + items.values, history.row_ids() * span + history.values)
    keep = ~in_history if kind == "exclude" else in_history
    return items.keep(keep), int((~keep).sum())


def score_examples(
    predictions: pa.Table,
    examples: Sequence[TaskExamples],
    ks: Sequence[int] = (10, 100),
    metrics: Sequence[str] = METRICS,
) -> TaskScores:
    """Metrics of validated ``predictions`` on each task of ``examples`` present in them."""
    validate_predictions(predictions)
    known_tasks = {ex.task for ex in examples}
    extra = sorted(set(predictions["task"].to_pylist()) - known_tasks)
    if extra:
        raise ValueError(
            f"predictions hold tasks {extra} that the examples do not have ({sorted(known_tasks)})"
        )
    width = max(ks)
    out: TaskScores = {}
    for ex in examples:
        rows = predictions.filter(pc.equal(predictions["task"], ex.task))
        if not len(rows):
            continue
        # The prediction row of each example user, -1 if absent (uids are distinct: validated).
        found = rows_by_key(rows["uid"].to_numpy().astype(np.int64), ex.uids)
        items = Ragged.from_arrow(rows["items"]).take(found)
        items, removed = _filtered(items, ex.history, ex.task)
        slot = np.arange(len(items.values)) - np.repeat(items.offsets[:-1], items.lengths)
        first = slot < width
        ranked = np.full((len(ex.uids), width), -1, dtype=np.int64)
        ranked[items.row_ids()[first], slot[first]] = items.values[first]
        result = compute_metrics(ranked, ex.targets, ks, metrics)
        scores: dict[str, float | int] = {f"{m}@{k}": v for (m, k), v in result.mean().items()}
        scores.update(
            users_evaluated=result.n_evaluated,
            users_skipped=result.skipped_empty_targets,
            users_without_predictions=int(((found < 0) & result.evaluated).sum()),
            predictions_unmatched=len(rows) - int((found >= 0).sum()),
            items_removed_by_filter=removed,
        )
        out[ex.task] = scores
    return out


def score_predictions(
    predictions: pa.Table | str | Path,
    examples_kind: ProtocolKind,
    lake_root: str,
    dataset: str,
    split: str = "test",
    ks: Sequence[int] = (10, 100),
    feedback: str = "listen_plus",
    output_json: str | Path | None = None,
) -> TaskScores:
    """Score external predictions: ``{task: {"ndcg@100": v, ..., "users_evaluated": n, ...}}``.

    ``split`` is the holdout split (val|test) or, for ``gts``, the window (val|test);
    ``feedback`` (listen_plus|like) applies to ``gts`` only. Users of the examples with no
    prediction are evaluated with zero hits (reported as ``users_without_predictions``).
    Writes the result as JSON to ``output_json`` when given (NaN as null).
    """
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"cut-offs k must be positive integers (e.g. 10,100), got {list(ks)}")
    table = _as_table(predictions)
    validate_predictions(table)
    if table.num_rows == 0:
        log.warning("the predictions hold no rows: nothing to score")
    if examples_kind not in PROTOCOL_KINDS:
        raise ValueError(f"examples_kind must be one of {PROTOCOL_KINDS}, got {examples_kind!r}")
    tasks = sorted(set(table["task"].to_pylist()))
    allowed = HOLDOUT_TASKS if examples_kind == "holdout" else GTS_TASKS
    wrong = [t for t in tasks if t not in allowed]
    if wrong:
        raise ValueError(
            f"predictions hold tasks {wrong} that {examples_kind} examples do not have ({allowed})"
        )
    if examples_kind == "holdout":
        examples = load_holdout(lake_root, dataset, split, tasks)
    else:
        examples = load_gts(lake_root, dataset, split, feedback, tasks)
    result = score_examples(table, examples, ks)
    if output_json is not None:
        clean = {
            task: {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in scores.items()}
            for task, scores in result.items()
        }
        Path(output_json).write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return result
