"""MLflow tracking and registry for a profile.

local: a SQLite store and an artifact folder under ``mlflow.local_dir`` (no server); browse
with ``mlflow ui --backend-store-uri sqlite:///<local_dir>/mlflow.db``. cluster: the
``MLFLOW_TRACKING_URI`` of an MLflow server (or ``mlflow.tracking_uri``).
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from musicrec.config import Config


def tracking_uri(config: Config) -> str:
    """``mlflow.tracking_uri`` if set; else cluster: ``MLFLOW_TRACKING_URI``; local: the SQLite file.

    The local profile deliberately ignores ``MLFLOW_TRACKING_URI``: MLflow itself exports it on
    every ``set_tracking_uri``, so honouring it would send one run's results to another's store.
    """
    if config.mlflow.tracking_uri:
        return config.mlflow.tracking_uri
    if config.runtime.profile == "cluster":
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        raise ValueError("runtime.profile=cluster needs mlflow.tracking_uri or MLFLOW_TRACKING_URI (an MLflow server)")
    db = Path(config.mlflow.local_dir).resolve() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def setup_mlflow(config: Config, experiment: str | None = None, *, per_dataset: bool = True) -> str:
    """Point MLflow at the profile's store and select ``<dataset>/<experiment>`` (or plain
    ``experiment`` when ``per_dataset`` is false, e.g. ``benchmarks``); returns its id."""
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = experiment or config.mlflow.experiment
    if per_dataset:
        name = f"{config.dataset.name}/{name}"
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        mlflow.set_experiment(name)
        return found.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        artifact_location = (Path(config.mlflow.local_dir).resolve() / "artifacts").as_uri()
    experiment_id = mlflow.create_experiment(name, artifact_location=artifact_location)
    mlflow.set_experiment(name)
    return experiment_id
