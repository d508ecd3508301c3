"""``musicrec grid``: train every run of the experiment grid, then register and promote per task.

Each run is the ``train`` job of its config (:func:`musicrec.train.job.run_train`): its own MLflow
run nested under this verb's (itself under the pipeline's), evaluated on the holdout test users of
every task it serves, tagged with its cell so that the report finds its row and column. Once all
have run, each model is registered for the tasks it serves and the ``champion`` alias of every
``<dataset>.<task>.<family>`` goes to the best of this grid's versions by validation NDCG@100.
Baselines (paper 002's table) run after the cells and are not registered: the registry's champions
are compared on holdout validation users, which a GTS run never sees.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow

from musicrec.config import Config
from musicrec.errors import InputError
from musicrec.experiments.cells import (
    APPROACH_TAG,
    BASELINE,
    FEEDBACK_TAG,
    MODEL_TAG,
    SHUFFLE_TAG,
    BaselineRun,
    GridRun,
    baseline_config,
    plan_baselines,
    plan_runs,
    run_config,
)
from musicrec.train.classic import pinned_version

log = logging.getLogger(__name__)


def check_grid(config: Config) -> None:
    if not config.grid.declared:
        raise InputError("the config declares no grid: grid.cells and grid.baselines.models are empty "
                         "(see conf/experiments/demo.yaml)")


def train_tagged(config: Config, tags: dict[str, str]) -> str:
    """Run the ``train`` job of ``config`` and tag its MLflow run with the cell it fills; its run id."""
    from musicrec.train.job import run_train

    run_id = run_train(config)["training_run"]
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return run_id


def train_runs(config: Config, runs: list[GridRun], version: int) -> dict[tuple[str, str, str], str]:
    """Train each run in order (a parent before its fine-tuned runs); their MLflow run ids by run key."""
    done: dict[tuple[str, str, str], str] = {}
    general = {(run.model, run.sequence): run.key for run in runs if run.cell.training == "general"}
    for i, run in enumerate(runs, 1):
        parent = done[general[run.parent]] if run.parent else ""
        log.info("grid [%d/%d] %s, %s on %s", i, len(runs), run.model, run.cell.label, run.sequence)
        done[run.key] = train_tagged(run_config(config, run, version, parent), {
            MODEL_TAG: run.model, APPROACH_TAG: run.cell.label, SHUFFLE_TAG: str(run.cell.shuffle).lower()})
    return done


def train_baselines(config: Config, runs: list[BaselineRun], version: int) -> list[str]:
    """Train each baseline; their MLflow run ids."""
    done = []
    for i, run in enumerate(runs, 1):
        log.info("baselines [%d/%d] %s on %s (%s)", i, len(runs), run.model, run.sequence, run.protocol)
        done.append(train_tagged(baseline_config(config, run, version),
                                 {MODEL_TAG: run.model, APPROACH_TAG: BASELINE, FEEDBACK_TAG: run.feedback}))
    return done


def for_tasks(config: Config, tasks: tuple[str, ...]) -> Config:
    """``config`` registering for exactly ``tasks`` (a general run: only the grid's tasks of its domain)."""
    return config.model_copy(update={"register": config.register.model_copy(update={"tasks": list(tasks)})})


def promote_champions(config: Config, registered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per registered name, the ``champion`` alias to the best of this grid's versions.

    Every run of the grid was trained and validated on the data the pipeline just preprocessed; a
    champion from an earlier run was validated on other data and cannot be compared, so the best of
    this grid wins (``promote``'s own comparison, restricted to these versions, then forced).
    """
    from musicrec.registry.promote import choose, promote

    client = mlflow.MlflowClient()
    champions = []
    for name in dict.fromkeys(entry["name"] for entry in registered):
        ours = {entry["version"] for entry in registered if entry["name"] == name}
        versions = [v for v in client.search_model_versions(f"name='{name}'") if int(v.version) in ours]
        try:
            best = choose(versions, config.promote.metric, None, None)
        except InputError as e:  # no version validated on this task (too few validation users)
            log.warning("%s: no champion: %s", name, e)
            continue
        champions.append(promote(name, config.promote.metric, version=int(best.version), force=True))
    return champions


def run_grid(config: Config) -> dict[str, Any]:
    import ray

    from musicrec.registry.register import register_run
    from musicrec.runtime.ray_setup import init_ray

    runs, baselines = plan_runs(config.grid), plan_baselines(config.grid)
    version = pinned_version(config)
    started_here = not ray.is_initialized()
    init_ray(config, dashboard=True)  # once for every run, not once per run; the dashboard: as for `train`
    try:
        trained = train_runs(config, runs, version)
        baseline_runs = train_baselines(config, baselines, version)
    finally:
        if started_here:
            ray.shutdown()
    registered = [entry for run in runs for entry in register_run(for_tasks(config, run.tasks), trained[run.key])]
    champions = promote_champions(config, registered)
    mlflow.log_params({"grid_runs": len(trained), "baseline_runs": len(baseline_runs), "sequences_version_read": version})
    return {
        "runs": len(trained),
        "baseline_runs": len(baseline_runs),
        "registered": len(registered),
        "champions": {c["name"]: c["champion"] for c in champions},
    }
