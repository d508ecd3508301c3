"""The baselines' results table, shaped like paper 002's Tables 6-7 (pure: DataFrames in, DataFrames out).

One table per feedback setup (Listen+, Like): rows are models, columns NDCG, Recall and Coverage at
10 and 100 on the GTS test window, next-item over the whole catalogue; the best of each column marked.
"""

from __future__ import annotations

import math

import pandas as pd

from musicrec.experiments.cells import APPROACH_TAG, BASELINE, FEEDBACK_TAG, MODEL_TAG
from musicrec.experiments.table import markdown_table
from musicrec.train.tasks import truth_task

FEEDBACK_NAMES = {"listen_plus": "Listen+", "like": "Like"}
# (MLflow metric stem, column stem), each at every cut-off of CUTOFFS: paper 002's columns.
METRICS: tuple[tuple[str, str], ...] = (("ndcg", "NDCG"), ("recall", "Recall"), ("coverage", "Coverage"))
CUTOFFS: tuple[int, ...] = (10, 100)
COLUMNS = tuple(f"{column}@{k}" for _, column in METRICS for k in CUTOFFS)
LONG_COLUMNS = ["feedback", "model", "metric", "value", "users"]


def baseline_results(runs: pd.DataFrame) -> pd.DataFrame:
    """The test-window metrics of the grid's baseline runs (``mlflow.search_runs`` rows) as tidy rows,
    with the number of users evaluated."""
    rows = []
    for _, run in runs[runs[f"tags.{APPROACH_TAG}"] == BASELINE].iterrows():
        stem = f"metrics.test/{truth_task(run['params.training_sequence'])}"
        users = run.get(f"{stem}/users_evaluated", math.nan)
        for name, column in METRICS:
            for k in CUTOFFS:
                value = run.get(f"{stem}/{name}_at_{k}")
                if value is not None and not pd.isna(value):
                    rows.append((run[f"tags.{FEEDBACK_TAG}"], run[f"tags.{MODEL_TAG}"], f"{column}@{k}", float(value), users))
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def baseline_wide(long: pd.DataFrame, feedback: str) -> pd.DataFrame:
    """Rows: models (as the grid ran them); columns: :data:`COLUMNS` measured."""
    rows = long[long["feedback"] == feedback]
    table = rows.pivot_table(index="model", columns="metric", values="value", aggfunc="first")
    return table.reindex(index=list(dict.fromkeys(rows["model"])), columns=[c for c in COLUMNS if c in table.columns])


def baseline_markdown(long: pd.DataFrame) -> str:
    """One Markdown table per feedback setup, the best of each column in bold."""
    parts = []
    for feedback in dict.fromkeys(long["feedback"]):
        table = baseline_wide(long, feedback)
        users = long[long["feedback"] == feedback]["users"].max()
        marks = table.eq(table.max(axis=0), axis=1)
        body = [
            [model, *(f"**{v:.4f}**" if marks.at[model, c] else f"{v:.4f}" for c, v in table.loc[model].items())]
            for model in table.index
        ]
        shown = "" if math.isnan(users) else f" ({int(users)} users)"
        parts.append(f"### {FEEDBACK_NAMES[feedback]}{shown}\n\n" + markdown_table(["model", *table.columns], body))
    return "\n\n".join(parts) + "\n"
