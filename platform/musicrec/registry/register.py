"""``musicrec register``: a training run's model as ``<dataset>.<task>.<family>``, once per run.

The training run is the source of everything a version records: the saved model (its ``model``
artifact), the Delta versions it read (``table_version.*`` params) and its validation metrics
(``val/<task>/<metric>_at_<k>``). Registering looks the run up among the name's versions first,
so running it again (or after ``train.register``) returns the existing version instead of a second one.

The pyfunc model is logged into the active run (the verb's) and its version points at the
training run (``run_id``), so the registry leads back to the run, its config and its data.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

from musicrec.config import Config
from musicrec.contract import TASKS
from musicrec.errors import ConfigError, InputError
from musicrec.models import FittedModel, load_model
from musicrec.registry.names import (
    DATA_VERSIONS,
    VALIDATION_PREFIX,
    data_versions,
    evaluation_tables,
    registered_name,
)
from musicrec.registry.pyfunc import log_pyfunc

log = logging.getLogger(__name__)


def check_register(config: Config) -> None:
    if not config.register.run_id:
        raise ConfigError("register needs the training run: register.run_id=RUN_ID")


def training_run(client: mlflow.MlflowClient, run_id: str) -> Run:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError(f"register.run_id={run_id!r}: no such run in {mlflow.get_tracking_uri()}") from None
    if run.info.lifecycle_stage != "active" or run.info.status != "FINISHED":
        raise InputError(
            f"register.run_id={run_id!r}: the run is {run.info.lifecycle_stage}/{run.info.status}, "
            "not a finished one"
        )
    if "protocol" not in run.data.params:
        raise InputError(f"register.run_id={run_id!r} is not a training run (it logged no `protocol`)")
    return run


def saved_model(run_id: str, into: Path) -> tuple[FittedModel, Path]:
    try:
        folder = Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", dst_path=str(into))
        )
        return load_model(folder), folder
    except (MlflowException, OSError) as e:
        raise InputError(
            f"register.run_id={run_id!r}: no saved model in the run's `model` artifact ({e})"
        ) from None


def validation_metrics(client: mlflow.MlflowClient, run: Run, task: str) -> dict[str, float]:
    """``{"ndcg_at_100": value, ...}`` of the model the run saved, on the task's validation users.

    A run that kept its best epoch (``best_epoch``, the sequential families) logged validation per
    epoch: the value is the best epoch's, the weights it saved.
    """
    prefix = f"{VALIDATION_PREFIX}{task}/"
    best_epoch = run.data.metrics.get("best_epoch")
    out = {}
    for key, value in run.data.metrics.items():
        if not key.startswith(prefix):
            continue
        if best_epoch is not None:
            history = client.get_metric_history(run.info.run_id, key)
            value = next((m.value for m in history if m.step == int(best_epoch)), value)
        out[key.removeprefix(prefix)] = value
    return out


def version_tags(run: Run, fitted: FittedModel, task: str, metrics: dict[str, float]) -> dict[str, str]:
    params = run.data.params
    protocol = params["protocol"]
    read = {
        key.removeprefix("table_version."): int(v)
        for key, v in params.items()
        if key.startswith("table_version.")
    }
    evaluated_on = {table: version for table, version in read.items() if table in evaluation_tables(protocol)}
    return {
        "task": task,
        "family": fitted.model.family,
        "training_sequence": fitted.sequence,
        "k": str(fitted.k),
        "protocol": protocol,
        "training_run": run.info.run_id,
        **{f"table_version.{table}": str(version) for table, version in read.items()},
        DATA_VERSIONS: data_versions(evaluated_on),
        **{f"{VALIDATION_PREFIX}{name}": repr(value) for name, value in metrics.items()},
    }


def _ensure_registered_model(client: mlflow.MlflowClient, name: str, tags: dict[str, str]) -> None:
    try:
        client.create_registered_model(
            name, tags=tags, description=f"{tags['family']} for task {tags['task']} of {tags['dataset']}"
        )
    except MlflowException as e:
        if e.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise


def register_run(config: Config, run_id: str) -> list[dict[str, Any]]:
    """Register the model of training run ``run_id`` for each task of ``register.tasks`` (default:
    every task it has validation metrics of); one row per task: name, version, whether it is new."""
    client = mlflow.MlflowClient()
    run = training_run(client, run_id)
    dataset = run.data.tags.get("dataset", config.dataset.name)
    with tempfile.TemporaryDirectory(prefix="musicrec-register-") as tmp:
        fitted, folder = saved_model(run_id, Path(tmp))
        metrics = {task: validation_metrics(client, run, task) for task in TASKS}
        tasks = list(config.register.tasks) or [
            task for task in TASKS if metrics[task] and fitted.runs_on(task)
        ]
        if not tasks:
            raise InputError(
                f"run {run_id} logged no validation metrics of any task; name the tasks: register.tasks=[T1]"
            )
        foreign = [task for task in tasks if not fitted.runs_on(task)]
        if foreign:
            raise InputError(f"run {run_id}'s model ({fitted.name}) does not serve {', '.join(foreign)}")
        out = []
        for task in tasks:
            name = registered_name(dataset, task, fitted.model.family)
            _ensure_registered_model(
                client, name, {"dataset": dataset, "task": task, "family": fitted.model.family}
            )
            existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
            if existing:
                version = min(existing, key=lambda v: int(v.version))
                out.append({"name": name, "version": int(version.version), "new": False})
                log.info("%s version %s is already run %s's model", name, version.version, run_id)
                continue
            info = log_pyfunc(fitted, folder, task, config.register.k, name=f"served-{task}")
            version = client.create_model_version(
                name,
                source=info.model_uri,
                run_id=run_id,
                model_id=info.model_id,
                tags=version_tags(run, fitted, task, metrics[task]),
            )
            out.append({"name": name, "version": int(version.version), "new": True})
            log.info("registered run %s's model as %s version %s", run_id, name, version.version)
    return out


def run_register(config: Config) -> dict[str, Any]:
    registered = register_run(config, config.register.run_id)
    mlflow.log_params(
        {
            "registered_run": config.register.run_id,
            "registered": ",".join(f"{r['name']}/{r['version']}" for r in registered),
        }
    )
    return {"registered": registered}
