"""``musicrec tune``: sweep ``model.family`` over ``tune.space`` with Ray Tune.

Optuna proposes the trials, ASHA stops the weak ones between epochs, both on validation
NDCG@100 of the training sequence's task. The driver pins the `sequences` version once (every
trial reads the same data) and is the only process that writes to MLflow: Ray's
``MLflowLoggerCallback`` makes each trial a child run of the verb's run as its results arrive, so
concurrent trials never share a store. After the sweep the driver completes the best trial's child
run as a training run (lineage, parameters, the model, validation and test metrics), registers it
once and makes it champion if it beats the current one on the same data.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from musicrec.config import Config
from musicrec.config.models import CLASSIC_FAMILIES
from musicrec.errors import ConfigError, InputError
from musicrec.train.classic import READS, pinned_version
from musicrec.train.loop import VALIDATION_METRIC
from musicrec.train.sequential import SEQUENTIAL_FAMILIES, plan, storage_uri
from musicrec.tune.space import check_space, search_space, trial_config

log = logging.getLogger(__name__)


def check_tune(config: Config) -> None:
    family = config.model.family
    if family not in CLASSIC_FAMILIES and family not in SEQUENTIAL_FAMILIES:
        raise InputError(f"model.family={family} cannot be tuned")
    check_space(config)
    if family in SEQUENTIAL_FAMILIES:
        plan(config)
    if not (config.runtime.ray.address or os.environ.get("RAY_ADDRESS")):
        check_local_cpus(config, config.runtime.ray.num_cpus or os.cpu_count() or 1)


def check_local_cpus(config: Config, cpus: float) -> None:
    """On the in-process Ray the CPUs are known: concurrent sequential trials must leave one for the
    Ray Data tasks that read their training data, or every trial waits for it forever."""
    t, train = config.tune, config.train
    if config.model.family not in SEQUENTIAL_FAMILIES:
        return
    per_trial = t.cpus_per_trial + train.workers * train.cpus_per_worker
    if t.max_concurrent * per_trial > cpus - 1:
        raise ConfigError(
            f"tune.max_concurrent={t.max_concurrent} trials x (tune.cpus_per_trial={t.cpus_per_trial} + "
            f"train.workers={train.workers} x train.cpus_per_worker={train.cpus_per_worker}) CPUs leave no CPU "
            f"of this {cpus:g}-CPU Ray to read the training data; lower train.cpus_per_worker or tune.max_concurrent"
        )


def _scheduler(config: Config, max_t: int):
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class RecordingASHA(ASHAScheduler):
        """ASHA that remembers the trials it stopped before ``max_t`` (stopping at ``max_t`` is the end)."""

        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.stopped_early: set[str] = set()

        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and result.get("training_iteration", max_t) < max_t:
                self.stopped_early.add(trial.trial_id)
            return decision

    t = config.tune
    return RecordingASHA(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(t.grace_period, max_t),
        reduction_factor=t.reduction_factor,
        # A trial that reaches max_t ends by itself (its Ray Train job shuts down cleanly).
        stop_last_trials=False,
    )


def _base(config: Config, version: int) -> dict:
    """The config every trial starts from: the pinned data version; one report per epoch (ASHA
    compares epochs); no registering inside trials (the driver registers the best one)."""
    base = config.model_dump(mode="json")
    base["train"] = {**base["train"], "sequences_version": version, "checkpoint_every_steps": 0, "register": False}
    return base


def trials_table(results, stopped_early: set[str]) -> pd.DataFrame:
    rows = []
    for result in results:
        history = result.metrics_dataframe
        values = history[VALIDATION_METRIC] if history is not None and VALIDATION_METRIC in history else pd.Series(dtype=float)
        rows.append({
            "trial_id": result.metrics.get("trial_id", ""),
            **{f"param.{key}": value for key, value in result.config.items()},
            "iterations": int(result.metrics.get("training_iteration", 0)),
            "best_" + VALIDATION_METRIC: float(values.max()) if len(values) else float("nan"),
            "stopped_early": result.metrics.get("trial_id") in stopped_early,
            "error": str(result.error).splitlines()[0] if result.error else "",
        })
    return pd.DataFrame(rows)


def plot_trials(results, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    for result in results:
        history = result.metrics_dataframe
        if history is not None and VALIDATION_METRIC in history:
            axis.plot(history["training_iteration"], history[VALIDATION_METRIC], marker="o",
                      label=result.metrics.get("trial_id", "?"))
    axis.set_xlabel("epoch (training iteration)")
    axis.set_ylabel("validation NDCG@100")
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _child_run(parent_id: str, trial_id: str) -> str:
    runs = mlflow.search_runs(
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", output_format="list", search_all_experiments=True
    )
    found = [run.info.run_id for run in runs if trial_id in run.data.tags.get("trial_name", "")]
    if len(found) != 1:
        raise RuntimeError(f"expected one MLflow child run for trial {trial_id}, found {len(found)}")
    return found[0]


def _checkpoint(path: str, storage: str):
    import pyarrow.fs
    from ray.train import Checkpoint

    if "://" in storage:
        filesystem, _ = pyarrow.fs.FileSystem.from_uri(storage)
        return Checkpoint(path, filesystem=filesystem)
    return Checkpoint(path)


def complete_best(config: Config, version: int, best, run_id: str) -> dict[str, Any]:
    """Log the best trial's child run as a training run, from its checkpoint: what `register` needs."""
    from musicrec.models import load_model
    from musicrec.tracking.runs import log_lineage
    from musicrec.train import classic, sequential

    trial = trial_config(_base(config, version), best.config)
    with mlflow.start_run(run_id=run_id, nested=True):
        log_lineage(trial, READS)
        if trial.model.family in SEQUENTIAL_FAMILIES:
            p = plan(trial)
            sequential.log_training_params(trial, p, version)
            with _checkpoint(best.metrics["checkpoint_path"], trial.train.storage_path).as_directory() as directory:
                return sequential.log_trained(trial, p, Path(directory))
        classic.log_training_params(trial, version)
        with best.checkpoint.as_directory() as directory:
            results = classic.log_trained(load_model(Path(directory) / "model"), trial)
        return {"result_rows": len(results)}


def register_best(config: Config, run_id: str) -> dict[str, Any]:
    from musicrec.registry.promote import promote
    from musicrec.registry.register import register_run

    registered = register_run(config, run_id)
    champions = []
    for entry in registered:
        try:
            champions.append(promote(entry["name"], config.promote.metric))
        except InputError as e:
            # Registered but not comparable with the champion (other data): the user decides.
            log.warning("%s version %s is registered but not promoted: %s", entry["name"], entry["version"], e)
            champions.append({"name": entry["name"], "not_promoted": str(e)})
    return {"registered": registered, "champions": champions}


def run_tune(config: Config) -> dict[str, Any]:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from musicrec.runtime.mlflow_setup import tracking_uri
    from musicrec.runtime.ray_setup import init_ray
    from musicrec.tune.trial import classic_trial, sequential_trial

    t = config.tune
    sequential = config.model.family in SEQUENTIAL_FAMILIES
    version = pinned_version(config)
    parent = mlflow.active_run()
    if parent is None:
        raise RuntimeError("run_tune runs inside the verb's MLflow run (musicrec.runner)")
    parent_id = parent.info.run_id
    uri = tracking_uri(config)
    experiment = mlflow.get_experiment(parent.info.experiment_id).name
    mlflow.log_params({"tune.sequences_version": version, "tune.space": json.dumps(config.model_dump(mode="json")["tune"]["space"])})

    init_ray(config, dashboard=sequential)
    trainable = tune.with_parameters(sequential_trial if sequential else classic_trial,
                                     base=_base(config, version), version=version)
    trainable = tune.with_resources(trainable, {"cpu": t.cpus_per_trial})
    max_t = config.model.max_epochs if sequential else 1
    scheduler = _scheduler(config, max_t)
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(t.space),
        tune_config=tune.TuneConfig(
            metric=VALIDATION_METRIC,
            mode="max",
            search_alg=OptunaSearch(seed=config.seed),
            scheduler=scheduler,
            num_samples=t.num_samples,
            max_concurrent_trials=t.max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=f"tune-{config.dataset.name}-{config.model.family}-{parent_id}",
            storage_path=storage_uri(config.train.storage_path),
            callbacks=[MLflowLoggerCallback(
                tracking_uri=uri, registry_uri=uri, experiment_name=experiment,
                tags={"mlflow.parentRunId": parent_id, "dataset": config.dataset.name, "family": config.model.family},
            )],
            verbose=1 if config.runtime.progress else 0,
        ),
    )
    results = tuner.fit()

    table = trials_table(results, scheduler.stopped_early)
    mlflow.log_text(table.to_csv(index=False), "tune/trials.csv")
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(plot_trials(results, Path(tmp) / "trials.png")), "tune")
    failed = int((table["error"] != "").sum())
    mlflow.log_metrics({"tune/trials": len(table), "tune/stopped_early": int(table["stopped_early"].sum()),
                        "tune/failed": failed})
    if failed == len(table):
        raise InputError(f"every trial of the sweep failed; the first: {table['error'].iloc[0]}")
    if failed:
        log.warning("%d of %d trials failed (see tune/trials.csv)", failed, len(table))

    best = results.get_best_result(VALIDATION_METRIC, "max", scope="all")
    best_id = best.metrics["trial_id"]
    best_value = float(table.loc[table.trial_id == best_id, "best_" + VALIDATION_METRIC].iloc[0])
    child = _child_run(parent_id, best_id)
    trained = complete_best(config, version, best, child)
    mlflow.set_tags({"tune.best_trial": best_id, "tune.best_run": child})
    mlflow.log_metric("tune/best_" + VALIDATION_METRIC, best_value)
    print(table.to_string(index=False))
    summary = {
        "trials": len(table),
        "stopped_early": int(table["stopped_early"].sum()),
        "failed": failed,
        "best_trial": best_id,
        "best_run": child,
        "best_params": dict(best.config),
        VALIDATION_METRIC: best_value,
        **{key: value for key, value in trained.items() if key.startswith("test_")},
    }
    if t.register:
        summary.update(register_best(config, child))
    return summary
