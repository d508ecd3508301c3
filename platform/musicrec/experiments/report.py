"""``musicrec report``: a grid run's results table, read back from MLflow, as a person reads it.

The numbers are the test metrics its training runs logged (never recomputed), so the report and the
MLflow UI always agree. Written under ``report.output_dir`` and logged as the ``report`` artifacts of
the grid's parent run (the pipeline's; the grid run itself when it ran alone); printed compactly
with the champion of each task and how to open the MLflow UI.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from musicrec.config import Config
from musicrec.contract import HOLDOUT_TASKS
from musicrec.errors import InputError
from musicrec.experiments.baseline_table import baseline_markdown, baseline_results
from musicrec.experiments.cells import APPROACH_TAG, FEEDBACK_TAG, MODEL_TAG
from musicrec.experiments.charts import bar_chart, training_curves
from musicrec.experiments.table import (
    markdown_table,
    results_from_runs,
    to_csv_frame,
    to_markdown,
    with_change,
)
from musicrec.registry.names import CHAMPION, VALIDATION_PREFIX, registered_name

log = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"
BASELINES_TITLE = "Baselines (global temporal split, test window, next item)"


def grid_run(config: Config, experiment_id: str) -> mlflow.entities.Run:
    """``report.run_id``, or the latest finished ``grid`` run of the experiment."""
    client = mlflow.MlflowClient()
    if config.report.run_id:
        return client.get_run(config.report.run_id)
    found = client.search_runs(
        [experiment_id], "attributes.run_name = 'grid' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not found:
        raise InputError("no finished grid run in this experiment: run `musicrec grid` (or the pipeline) first")
    return found[0]


def training_runs(grid: mlflow.entities.Run) -> pd.DataFrame:
    """The grid's training runs (its children tagged with a cell), oldest first."""
    runs = mlflow.search_runs(
        [grid.info.experiment_id], f"tags.`{PARENT_TAG}` = '{grid.info.run_id}'", order_by=["attributes.start_time ASC"]
    )
    if f"tags.{MODEL_TAG}" not in runs:
        raise InputError(f"grid run {grid.info.run_id} has no training runs")
    return runs[runs[f"tags.{MODEL_TAG}"].notna()].reset_index(drop=True)


def champions(dataset: str, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per task, the registry's champion of each family the grid trained, best first by its
    validation ``metric`` (the one promotion compares)."""
    client = mlflow.MlflowClient()
    by_run = runs.set_index("run_id")
    rows = []
    for task in HOLDOUT_TASKS:
        for family in dict.fromkeys(runs["params.family"]):
            name = registered_name(dataset, task, family)
            try:
                version = client.get_model_version_by_alias(name, CHAMPION)
            except mlflow.exceptions.MlflowException:
                continue  # never registered for this task, or no version validated on it
            run_id = version.tags.get("training_run", version.run_id)
            cell = by_run.loc[run_id] if run_id in by_run.index else None
            rows.append({
                "task": task, "name": name, "version": int(version.version),
                "model": cell[f"tags.{MODEL_TAG}"] if cell is not None else family,
                "approach": cell[f"tags.{APPROACH_TAG}"] if cell is not None else "(an earlier run)",
                "validation": float(version.tags.get(VALIDATION_PREFIX + metric, "nan")),
            })
    table = pd.DataFrame(rows, columns=["task", "name", "version", "model", "approach", "validation"])
    return table.sort_values(["task", "validation"], ascending=[True, False], kind="stable")


def training_history(runs: pd.DataFrame) -> pd.DataFrame:
    """Per epoch of each sequential run (those that logged ``epochs_trained``): its training loss and
    the validation NDCG@100 that early stopping watched, as logged."""
    client = mlflow.MlflowClient()
    rows = []
    sequential = runs[runs["metrics.epochs_trained"].notna()] if "metrics.epochs_trained" in runs else runs.iloc[:0]
    for _, run in sequential.iterrows():
        feedback = run.get(f"tags.{FEEDBACK_TAG}")
        label = f"{run[f'tags.{MODEL_TAG}']}, {run[f'tags.{APPROACH_TAG}']}, {run['params.training_sequence']}" + (
            f", {feedback}" if isinstance(feedback, str) else "")
        loss = {m.step: m.value for m in client.get_metric_history(run["run_id"], "train/loss")}
        val = {m.step: m.value for m in client.get_metric_history(run["run_id"], f"val/{run['params.task']}/ndcg_at_100")}
        rows += [(label, epoch, loss[epoch], val.get(epoch, math.nan)) for epoch in sorted(loss)]
    return pd.DataFrame(rows, columns=["run", "epoch", "loss", "val_ndcg"])


def write_report(long: pd.DataFrame, baselines: pd.DataFrame, champs: pd.DataFrame, history: pd.DataFrame,
                 folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sections, figures = [], []
    if not long.empty:
        with_change(long).to_csv(folder / "results_long.csv", index=False)
        to_csv_frame(long).to_csv(folder / "results.csv")
        sections.append("# Results (holdout test users)\n\n" + to_markdown(long))
        figures += [bar_chart(long, task, folder / f"bars_{task}.png") for task in dict.fromkeys(long["task"])]
    if not baselines.empty:
        baselines.to_csv(folder / "baselines.csv", index=False)
        sections.append(f"# {BASELINES_TITLE}\n\n" + baseline_markdown(baselines))
    champs.to_csv(folder / "champions.csv", index=False)
    sections.append("## Champions\n\n" + markdown_table(list(champs.columns), champs.round(4).values.tolist()) + "\n")
    (folder / "report.md").write_text("\n".join(sections))
    if not history.empty:
        history.to_csv(folder / "training_history.csv", index=False)
        figures.append(training_curves(history, folder / "training_curves.png"))
    return figures


def summary_text(long: pd.DataFrame, baselines: pd.DataFrame, champs: pd.DataFrame, metric: str, folder: Path,
                 ui: str) -> str:
    lines = [to_markdown(long)] if not long.empty else []
    if not baselines.empty:
        lines += [BASELINES_TITLE + ":", baseline_markdown(baselines)]
    best = champs.groupby("task", sort=False).head(1)
    if len(best):
        lines.append("champion per task:")
    for c in best.itertuples(index=False):
        shown = "" if math.isnan(c.validation) else f", validation {metric} {c.validation:.4f}"
        lines.append(f"  {c.task}: models:/{c.name}@{CHAMPION} (version {c.version}: {c.model}, {c.approach}{shown})")
    lines += [f"report: {folder}", f"MLflow UI: {ui}"]
    return "\n".join(lines)


def run_report(config: Config) -> dict[str, Any]:
    from musicrec.runtime.mlflow_setup import ui_hint

    grid = grid_run(config, mlflow.active_run().info.experiment_id)
    runs = training_runs(grid)
    long, baselines = results_from_runs(runs), baseline_results(runs)
    if long.empty and baselines.empty:
        raise InputError(f"grid run {grid.info.run_id}'s training runs logged no test metrics @100")
    champs = champions(config.dataset.name, runs, config.promote.metric)
    folder = Path(config.report.output_dir) / f"{config.dataset.name}-{config.mlflow.experiment}-{grid.info.run_id[:8]}"
    write_report(long, baselines, champs, training_history(runs), folder)
    target = grid.data.tags.get(PARENT_TAG, grid.info.run_id)
    mlflow.MlflowClient().log_artifacts(target, str(folder), "report")
    print(summary_text(long, baselines, champs, config.promote.metric, folder, ui_hint(config)))
    return {
        "grid_run": grid.info.run_id,
        "report": str(folder / "report.md"),
        "logged_to": target,
        "champions": {c.task: f"{c.name}@{CHAMPION}" for c in champs.groupby("task").head(1).itertuples(index=False)},
    }
