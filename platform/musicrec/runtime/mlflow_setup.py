"""MLflow tracking and registry for a profile.

local: a SQLite store and an artifact folder under ``mlflow.local_dir`` (no server); browse
with ``make mlflow-ui`` (see :func:`ui_hint`). cluster: the
``MLFLOW_TRACKING_URI`` of an MLflow server (or ``mlflow.tracking_uri``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mlflow

from musicrec.config import Config
from musicrec.errors import ConfigError


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
        raise ConfigError(
            "runtime.profile=cluster needs an MLflow server: set MLFLOW_TRACKING_URI or mlflow.tracking_uri"
        )
    return f"sqlite:///{Path(config.mlflow.local_dir).resolve() / 'mlflow.db'}"


def setup_mlflow(config: Config, experiment: str | None = None, *, per_dataset: bool = True) -> str:
    """Point MLflow at the profile's store and select ``<dataset>/<experiment>`` (or plain
    ``experiment`` when ``per_dataset`` is false, e.g. ``benchmarks``); returns its id."""
    uri = tracking_uri(config)
    if not config.runtime.progress:
        # MLflow draws a progress bar per artifact download (registering, evaluating a trained model).
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    if uri.startswith("sqlite:"):
        Path(config.mlflow.local_dir).mkdir(parents=True, exist_ok=True)
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


def ui_hint(config: Config) -> str:
    """A command that shows this config's runs, runnable as printed from the current directory."""
    uri = tracking_uri(config)
    if not uri.startswith("sqlite:"):
        return f"open {uri}"
    repo = Path(__file__).resolve().parents[3]
    local_dir = Path(config.mlflow.local_dir).resolve()
    if local_dir == repo / "mlflow" and Path.cwd().resolve() == repo and (repo / "Makefile").is_file():
        return "make mlflow-ui"
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    return f"{mlflow_bin} ui --host 127.0.0.1 --port 5000 --backend-store-uri {uri}"
