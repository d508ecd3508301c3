"""The grid's results table, shaped like paper 000's Tables 3-5 (pure: DataFrames in, DataFrames out).

Rows are training approaches, columns task x model x metric; each value is shown with its relative
change against the general model (``general + filter``) of the same task, model and metric, and the
best value of each column is marked.
"""

from __future__ import annotations

import math

import pandas as pd

from musicrec.contract import HOLDOUT_TASKS
from musicrec.experiments.cells import APPROACH_TAG, BASELINE, MODEL_TAG, SHUFFLE_TAG

GENERAL = "general + filter"
SHUFFLED = ", shuffled"
# (MLflow metric name, column name): paper 000 reports NDCG@100 and Recall@100.
METRICS: tuple[tuple[str, str], ...] = (("ndcg_at_100", "NDCG@100"), ("recall_at_100", "Recall@100"))
LONG_COLUMNS = ["approach", "task", "model", "metric", "value"]


def results_from_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The test metrics of the grid's training runs (``mlflow.search_runs`` rows, oldest first) as
    tidy rows; a run with the shuffle ablation also gives its ``<approach>, shuffled`` rows. Baseline
    runs (the GTS) are another table's (:mod:`musicrec.experiments.baseline_table`)."""
    rows = []
    for _, run in runs[runs[f"tags.{APPROACH_TAG}"] != BASELINE].iterrows():
        variants = [("", run[f"tags.{APPROACH_TAG}"])]
        if run.get(f"tags.{SHUFFLE_TAG}") == "true":
            variants.append(("shuffled/", run[f"tags.{APPROACH_TAG}"] + SHUFFLED))
        for task in HOLDOUT_TASKS:
            for prefix, approach in variants:
                for name, column in METRICS:
                    value = run.get(f"metrics.test/{task}/{prefix}{name}")
                    if value is not None and not pd.isna(value):
                        rows.append((approach, task, run[f"tags.{MODEL_TAG}"], column, float(value)))
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def approach_order(long: pd.DataFrame) -> list[str]:
    """The general model first, then the approaches as the grid ran them, each shuffled row after its own."""
    seen = list(dict.fromkeys(long["approach"]))
    plain = [a for a in seen if not a.endswith(SHUFFLED)]
    plain = [GENERAL] * (GENERAL in plain) + [a for a in plain if a != GENERAL]
    return [v for a in plain for v in (a, a + SHUFFLED) if v in seen]


def with_change(long: pd.DataFrame) -> pd.DataFrame:
    """``long`` plus ``change``: (value - general) / general for the same task, model and metric
    (NaN for the general row itself, or where no general model was trained)."""
    keys = ["task", "model", "metric"]
    base = long[long["approach"] == GENERAL].set_index(keys)["value"].rename("base")
    out = long.join(base, on=keys)
    change = [(v - b) / b if b and not math.isnan(b) else math.nan for v, b in zip(out["value"], out["base"], strict=True)]
    out["change"] = change
    out.loc[out["approach"] == GENERAL, "change"] = math.nan
    return out.drop(columns="base")


def wide(long: pd.DataFrame, values: str = "value") -> pd.DataFrame:
    """Rows: approaches (in :func:`approach_order`); columns: (task, model, metric)."""
    table = long.pivot_table(index="approach", columns=["task", "model", "metric"], values=values,
                             aggfunc="first", dropna=False)
    metric_order = [column for _, column in METRICS]
    # The combinations measured (not every task x model x metric: a model may skip a task).
    measured = set(zip(long["task"], long["model"], long["metric"], strict=True))
    columns = sorted(measured, key=lambda c: (HOLDOUT_TASKS.index(c[0]), c[1], metric_order.index(c[2])))
    return table.reindex(index=approach_order(long), columns=pd.MultiIndex.from_tuples(columns, names=table.columns.names))


def best(table: pd.DataFrame) -> pd.DataFrame:
    """True where a value is its column's best (ties all marked)."""
    return table.eq(table.max(axis=0), axis=1)


def to_csv_frame(long: pd.DataFrame) -> pd.DataFrame:
    """One flat table: ``<task>/<model>/<metric>`` value columns, each followed by its ``change`` column."""
    changed = with_change(long)
    values, changes = wide(changed, "value"), wide(changed, "change")
    out = pd.DataFrame(index=values.index)
    for column in values.columns:
        name = "/".join(column)
        out[name] = values[column]
        out[f"{name} change"] = changes[column]
    return out


def _cell(value: float, change: float, is_best: bool) -> str:
    if math.isnan(value):
        return "–"
    text = f"{value:.4f}" + ("" if math.isnan(change) else f" ({change:+.1%})")
    return f"**{text}**" if is_best else text


def to_markdown(long: pd.DataFrame) -> str:
    """One Markdown table per task (rows: approaches; columns: model x metric), best in bold."""
    changed = with_change(long)
    values, changes = wide(changed, "value"), wide(changed, "change")
    marks = best(values)
    parts = []
    for task in dict.fromkeys(values.columns.get_level_values("task")):
        columns = [c for c in values.columns if c[0] == task]
        header = ["approach", *(f"{model} {metric}" for _, model, metric in columns)]
        rows = [
            [approach, *(_cell(values.at[approach, c], changes.at[approach, c], bool(marks.at[approach, c])) for c in columns)]
            for approach in values.index[values[columns].notna().any(axis=1)]
        ]
        parts.append(f"### {task}\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts) + "\n"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])
