"""Train a classic family (popularity, ItemKNN, ALS, BPR, EASE) as one Ray task and log it to MLflow.

These families are not data-parallel (implicit fits on one machine), so the fit is a single Ray
task: in-process Ray locally, the cluster's when ``RAY_ADDRESS`` is set. The task reads the
training sequences itself (at the version the driver pinned), so on a cluster the data goes
from the lake to the worker without passing through the driver; it returns the fitted model.
The driver then saves it, logs it as the run's ``model`` artifact and evaluates it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from musicrec.config import Config
from musicrec.contract import Protocol
from musicrec.errors import InputError
from musicrec.evaluate.protocols import EvalOptions, evaluate, format_results, log_results
from musicrec.lake.readers import load_gts, load_holdout, sequences_version
from musicrec.models import FittedModel
from musicrec.retrieval.index import log_index
from musicrec.runtime.mlflow_setup import setup_mlflow
from musicrec.tracking.runs import log_lineage
from musicrec.train.fit_task import fit_from_lake
from musicrec.train.tasks import model_name

log = logging.getLogger(__name__)

READS = ("sequences", "holdout_examples", "gts_examples")


def task_cpus(config: Config) -> int:
    """CPUs the fit's Ray task reserves: ``train.num_cpus``, else as many as the family's threads
    (implicit's ``num_threads``; 0, every core, is every CPU of the largest node, where the task
    then runs alone), else 1. Reserving fewer than the threads would oversubscribe the node."""
    import ray

    if config.train.num_cpus is not None:
        return config.train.num_cpus
    threads = getattr(config.model, "num_threads", None)
    if threads is None:
        return 1
    if threads > 0:
        return threads
    return int(max(node["Resources"].get("CPU", 1) for node in ray.nodes() if node["Alive"]))


def fit_on_ray(config: Config, version: int | None) -> FittedModel:
    import ray

    from musicrec.runtime.ray_setup import init_ray

    started_here = not ray.is_initialized()
    init_ray(config)
    try:
        task = ray.remote(num_cpus=task_cpus(config), max_retries=0)(fit_from_lake)
        try:
            fitted = ray.get(task.remote(config, version))
        except ray.exceptions.RayTaskError as e:
            # A user error raised inside the task (e.g. EASE above its catalogue bound) stays one line.
            if isinstance(e.cause, InputError):
                raise e.cause from None
            raise
        # Arrays from Ray's object store are read-only views; implicit's Cython needs writable ones.
        fitted.model.load_state({key: np.array(value) for key, value in fitted.model.state().items()})
        return fitted
    finally:
        if started_here:
            ray.shutdown()


def evaluate_trained(model: FittedModel, config: Config) -> pd.DataFrame:
    """Validation and test metrics on the protocol the model was trained for; with
    ``evaluate.shuffle``, the holdout test users also with shuffled inputs (the ablation)."""
    options = EvalOptions(ks=tuple(config.evaluate.ks), batch_size=config.evaluate.batch_size)
    protocol = Protocol.parse(config.train.protocol)
    tables = []
    if protocol.kind == "holdout":
        for split in ("val", "test"):
            examples = load_holdout(config.lake.root, config.dataset.name, split)
            shuffle_seed = config.seed if config.evaluate.shuffle and split == "test" else None
            tables.append(evaluate([model], examples, protocol.name, split, replace(options, shuffle_seed=shuffle_seed)))
    else:
        # A GTS stage's training data ends before its window: that window is the model's evaluation.
        examples = load_gts(config.lake.root, config.dataset.name, protocol.window, protocol.feedback)
        tables.append(evaluate([model], examples, protocol.name, protocol.window, options))
    return pd.concat(tables, ignore_index=True)


def log_training_params(config: Config, version: int | None) -> None:
    t = config.train
    mlflow.log_params(
        {
            "family": config.model.family,
            "training_sequence": t.sequence,
            "k": t.k,
            "protocol": t.protocol,
            "sequences_version": version,
            **{f"model.{key}": value for key, value in config.model.model_dump(mode="json").items()},
        }
    )


def log_trained(model: FittedModel, config: Config) -> pd.DataFrame:
    """Into the active run: the saved model as the ``model`` artifact (also copied to
    ``train.output_dir``) and its validation and test metrics; returns the metrics."""
    workdir = Path(tempfile.mkdtemp(prefix="musicrec-train-"))
    try:
        folder = model.save(workdir / "model")
        mlflow.log_artifacts(str(folder), "model")
        log_index(model, config.retrieval, config.seed)  # the run's `index` artifact, where the family has embeddings
        if config.train.output_dir:
            shutil.copytree(folder, config.train.output_dir, dirs_exist_ok=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = evaluate_trained(model, config)
    if len(results):
        log_results(results)
    mlflow.log_text(format_results(results), "evaluation/results.txt")
    return results


def pinned_version(config: Config) -> int:
    """``train.sequences_version``, or the latest version of `sequences` now."""
    if config.train.sequences_version is not None:
        return config.train.sequences_version
    try:
        return sequences_version(config.lake.root, config.dataset.name)
    except FileNotFoundError as e:
        raise InputError(str(e)) from None


def run_classic(config: Config) -> dict[str, Any]:
    version = pinned_version(config)
    setup_mlflow(config)
    with mlflow.start_run(run_name=f"train {model_name(config)}", nested=mlflow.active_run() is not None) as run:
        log_lineage(config, READS)
        log_training_params(config, version)
        started = time.perf_counter()
        model = fit_on_ray(config, version)
        mlflow.log_metric("fit_seconds", time.perf_counter() - started)
        results = log_trained(model, config)
    print(format_results(results[results["metric"].isin(("ndcg", "recall", "hr"))]))
    return {
        "mlflow_run": run.info.run_id,
        "training_run": run.info.run_id,
        "model_uri": f"runs:/{run.info.run_id}/model",
        "model": model.name,
        "sequences_version": version,
        "result_rows": len(results),
    }
