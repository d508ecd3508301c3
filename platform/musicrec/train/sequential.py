"""``musicrec train`` for the sequential families: a Ray Train ``TorchTrainer`` job.

The driver pins the `sequences` version, builds a lazy Ray Data stream of the training rows
(one per worker, narrowed to its users) without reading any of them, starts the trainer
(``ScalingConfig`` / ``FailureConfig`` / ``RunConfig`` from ``train.*``), and, once it ends,
is the only process that writes to MLflow: the per-epoch history and the best weights come
back in the final checkpoint, so a restarted worker never logs twice and the SQLite store
never sees two writers. The best epoch's model is then saved as a run artifact and evaluated
on the holdout test users of its task.

Under the global temporal split a run trains on the validation stage (``gts_val_<feedback>``),
picks its epoch on the validation window, and is tested on the test window with the test stage's
inputs (each user's events up to the test window's gap), without retraining: early stopping on a
window the training data contains would be no validation at all.

Fine-tuning (models.md): ``train.init_from`` names a trained model (an MLflow run id with a
``model`` artifact, or a saved model folder). Its architecture, weights and item vocabulary
are kept; learning rate, batch, epochs and patience come from this run's ``model.*``, the
training sequence from ``train.*``. The run records its parent.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow

from musicrec.config import Config
from musicrec.contract import GTS_TASKS, HOLDOUT_TASKS, Protocol
from musicrec.errors import InputError
from musicrec.models import FittedModel, family_class, load_model
from musicrec.retrieval.index import log_index
from musicrec.train.loop import (
    VALIDATION_METRIC,
    WorkerSpec,
    best_weights,
    checkpoint_items,
    load_state,
    peak_rss_mb,
    train_worker,
)
from musicrec.train.stream import sequences_version, training_dataset, worker_datasets
from musicrec.train.tasks import sequence_tasks, validation_task

log = logging.getLogger(__name__)

SEQUENTIAL_FAMILIES = ("sasrec", "gsasrec", "bert4rec")
# Settings a fine-tuning run takes from its own config; everything else is the parent's.
FINE_TUNE_KEYS = ("learning_rate", "batch_size", "max_epochs", "patience")
TABLES_READ = ("sequences", "holdout_examples", "gts_examples")
# Per-epoch throughput of the loop, logged as train/<key> (mfu only on a device with a known peak).
THROUGHPUT = ("positions_per_second", "tokens_per_second", "model_tflops", "mfu")


def model_config(config: Config, family: str, parent: FittedModel | None = None) -> dict:
    """The family's settings from ``model.*`` (or the parent's, with this run's fine-tuning keys)."""
    schema = family_class(family).Config
    given = {key: value for key, value in config.model.model_dump(mode="json").items() if key in schema.model_fields}
    if parent is not None:
        given = {**parent.model.config_dict(), **{key: given[key] for key in FINE_TUNE_KEYS if key in given}}
    return schema.model_validate(given).model_dump(mode="json")


def resolve_parent(reference: str) -> tuple[FittedModel, str]:
    """A saved model folder, or the ``model`` artifact of an MLflow run id; and how it is recorded."""
    path = Path(reference)
    if path.exists():
        return load_model(path), str(path.resolve())
    try:
        local = mlflow.artifacts.download_artifacts(run_id=reference, artifact_path="model")
    except Exception as e:  # noqa: BLE001 - MLflow raises several types for an unknown run
        raise InputError(f"train.init_from={reference!r} is neither a saved model folder nor a run with a model") from e
    return load_model(local), reference


def plot_curve(history: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    metric_axis = loss_axis.twinx()
    metric_axis.plot(epochs, [h["metric"] for h in history], color="tab:orange", label="val NDCG@100")
    metric_axis.set_ylabel("validation NDCG@100", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def trainer_for(config: Config, spec: WorkerSpec, datasets: dict, name: str, callbacks: tuple = ()):
    """The TorchTrainer of the job: scaling, failures and storage from ``train.*``; ``callbacks``
    are Ray Train callbacks (a Tune trial passes Tune's report callback)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t = config.train
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = t.gpus_per_worker or 1.0
    return TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec},
        # Gloo on CPUs, NCCL on GPUs.
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage_uri(t.storage_path),
            failure_config=FailureConfig(max_failures=t.max_failures),
            # The latest checkpoint to resume from and the one before it (in case the latest is cut short).
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
        # Each worker reads its own dataset whole: sharding is by user, decided in data.worker_datasets.
        dataset_config=DataConfig(datasets_to_split=[]),
    )


def storage_uri(path: str) -> str:
    """Ray needs an absolute local path (workers may start elsewhere); URIs pass as they are."""
    return str(Path(path).resolve()) if "://" not in path else path


@dataclass(frozen=True)
class Plan:
    """What a sequential training run is, checked before Ray starts: the family's settings
    (validated), the task whose validation users pick the best epoch, the fine-tuning parent."""

    family: str
    settings: dict
    task: str
    parent: FittedModel | None
    parent_ref: str


def plan(config: Config) -> Plan:
    family = config.model.family
    if family not in SEQUENTIAL_FAMILIES:
        raise InputError(f"model.family={family} is not a sequential family ({', '.join(SEQUENTIAL_FAMILIES)})")
    t = config.train
    protocol = Protocol.parse(t.protocol)
    if protocol.kind == "gts" and protocol.window != "val":
        raise InputError(f"train.protocol={t.protocol}: sequential training early-stops on the validation window, so "
                         f"it trains on the validation stage (gts_val_{protocol.feedback}) and is tested on the test window")
    task_name = validation_task(config)
    parent, parent_ref = resolve_parent(t.init_from) if t.init_from else (None, "")
    if parent is not None and parent.model.family != family:
        raise InputError(f"train.init_from is a {parent.model.family} model but model.family={family}")
    return Plan(family, model_config(config, family, parent), task_name, parent, parent_ref)


def worker_spec(config: Config, p: Plan, name: str) -> WorkerSpec:
    """What every worker of the run needs (``name``: the Ray Train run's, under ``train.storage_path``)."""
    import ray

    t = config.train
    storage = Path(t.storage_path) if "://" not in t.storage_path else None
    return WorkerSpec(
        family=p.family,
        model_config=p.settings,
        seed=config.seed,
        items=ray.put(p.parent.items.ids) if p.parent is not None else None,
        sharding=t.sharding,
        batch_size=p.settings["batch_size"],
        max_epochs=p.settings["max_epochs"],
        patience=p.settings["patience"],
        checkpoint_every_steps=t.checkpoint_every_steps,
        mixed_precision=t.mixed_precision,
        lake_root=storage_uri(config.lake.root),
        dataset=config.dataset.name,
        task=p.task,
        sequence=t.sequence,
        k=t.k,
        val_batch_size=t.val_batch_size,
        parent_state=ray.put(p.parent.model.state()) if p.parent is not None else None,
        fail_at_step=t.fail_at_step,
        fail_marker=str(storage.resolve() / name / "injected_failure") if storage is not None else "",
        protocol=t.protocol,
        numpy_hugepages=config.runtime.numpy_hugepages,
    )


def fit_on_ray_train(config: Config, p: Plan, version: int, name: str, callbacks: tuple = ()):
    """Run the TorchTrainer on the pinned ``sequences`` version; its final result (checkpoint: the
    last epoch's state and the best epoch's weights)."""
    from ray.data import DataContext

    t = config.train
    DataContext.get_current().enable_progress_bars = False
    rows = training_dataset(config.lake.root, config.dataset.name, t.protocol, t.sequence, t.k, version)
    spec = worker_spec(config, p, name)
    return trainer_for(config, spec, worker_datasets(rows, t.workers, t.sharding), name, callbacks).fit()


def test_results(config: Config, p: Plan, fitted: FittedModel):
    """The trained model on the test users of every task its sequence serves (a general model: each
    task of its domain through the filter), so that general and on-task models meet in one table.
    Holdout: validation also on the tasks other than the one that picked the epoch (whose per-epoch
    values are logged), so that registering can compare the model on each of them; returns the test."""
    from musicrec.evaluate.protocols import EvalOptions, evaluate, evaluate_holdout, log_results
    from musicrec.lake.readers import load_gts

    t, lake, dataset = config.train, config.lake.root, config.dataset.name
    options = EvalOptions(ks=tuple(config.evaluate.ks), metrics=("ndcg", "recall", "hr"))
    protocol = Protocol.parse(t.protocol)
    if protocol.kind == "gts":
        tasks = [name for name in sequence_tasks(t.sequence) if name in GTS_TASKS]
        test_stage = Protocol.gts("test", protocol.feedback).name
        return evaluate([fitted], load_gts(lake, dataset, "test", protocol.feedback, tasks), test_stage, "test", options)
    tasks = [name for name in sequence_tasks(t.sequence) if name in HOLDOUT_TASKS]
    test = evaluate_holdout([fitted], lake, dataset, "test", tasks,
                            replace(options, shuffle_seed=config.seed if config.evaluate.shuffle else None))
    others = [name for name in tasks if name != p.task]
    if others:
        log_results(evaluate_holdout([fitted], lake, dataset, "val", others, options),
                    artifact_file="evaluation/val_results.csv")
    return test


def log_trained(config: Config, p: Plan, directory: Path) -> dict[str, Any]:
    """Into the active run: the per-epoch history and its plot, the best epoch's model as the
    ``model`` artifact, and its holdout test metrics on the plan's task; returns the summary."""
    from musicrec.evaluate.protocols import format_results, log_results

    t = config.train
    state = load_state(directory)
    weights = best_weights(directory)
    items = checkpoint_items(directory)
    mlflow.log_param("n_items", len(items))
    for record in state.history:
        step = int(record["epoch"])
        throughput = {f"train/{key}": record[key] for key in THROUGHPUT if key in record}
        memory = {f"memory/worker{rank}_peak_rss_mb": mb for rank, mb in enumerate(record["worker_peak_rss_mb"])}
        mlflow.log_metrics({"train/loss": record["loss"], f"val/{p.task}/ndcg_at_100": record["metric"],
                            "train/epoch_seconds": record["seconds"], **throughput, **memory}, step=step)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(plot_curve(state.history, Path(tmp) / "training_curve.png")), "plots")

    model = family_class(p.family)(family_class(p.family).Config.model_validate(p.settings), seed=config.seed)
    model.init_network(len(items))
    if weights is not None:
        model.network.load_state_dict(weights)
    model.network.eval()
    fitted = FittedModel(f"{p.family}[{t.sequence}]", model, items, t.sequence, t.k)
    with tempfile.TemporaryDirectory() as tmp:
        fitted.save(Path(tmp) / "model")
        mlflow.log_artifacts(str(Path(tmp) / "model"), "model")
    log_index(fitted, config.retrieval, config.seed)  # the run's `index` artifact (retrieval)
    test = test_results(config, p, fitted)
    log_results(test, artifact_file="evaluation/test_results.csv")
    mlflow.log_metrics({"best_epoch": state.best_epoch, f"best/{VALIDATION_METRIC}": state.best_metric,
                        "epochs_trained": len(state.history)})
    summary = {
        "family": p.family,
        "sequence": t.sequence,
        "k": t.k,
        "task": p.task,
        "epochs": len(state.history),
        "device": state.device,
        "bf16": state.bf16,
        "best_epoch": state.best_epoch,
        VALIDATION_METRIC: state.best_metric,
        "history": state.history,
        "test": format_results(test),
    }
    ndcg = test[(test.task == p.task) & (test.variant == "full") & (test.metric == "ndcg")
                & (test.k == max(config.evaluate.ks))]
    summary[f"test_ndcg_at_{max(config.evaluate.ks)}"] = float(ndcg.value.iloc[0]) if len(ndcg) else math.nan
    return summary


def log_training_params(config: Config, p: Plan, version: int) -> None:
    t = config.train
    mlflow.log_params({"family": p.family, "training_sequence": t.sequence, "k": t.k, "protocol": t.protocol, "task": p.task,
                       "workers": t.workers, "use_gpu": t.use_gpu, "sharding": t.sharding,
                       "sequences_version_read": version})
    mlflow.log_params({f"model.{key}": value for key, value in p.settings.items()})
    mlflow.set_tags({"family": p.family, "sequence": t.sequence, "task": p.task})
    if p.parent is not None:
        mlflow.set_tags({"parent_model": p.parent_ref, "fine_tuned_from": p.parent.name})


def run_sequential_train(config: Config, run_name: str = "train") -> dict[str, Any]:
    """Train ``model.family`` (sasrec/gsasrec/bert4rec) on Ray Train; log and return the summary."""
    from musicrec.runtime.mlflow_setup import setup_mlflow
    from musicrec.runtime.ray_setup import init_ray
    from musicrec.tracking.runs import log_lineage

    p = plan(config)  # validated before Ray starts
    t = config.train
    init_ray(config, dashboard=True)  # Ray Train's placement-group cleaner watches the run through it
    version = sequences_version(config.lake.root, config.dataset.name, t.protocol, t.sequence, t.k,
                                t.sequences_version)
    setup_mlflow(config)
    # Nested under a caller's active run (a benchmark) rather than failing on it.
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        log_lineage(config, TABLES_READ)
        log_training_params(config, p, version)
        result = fit_on_ray_train(config, p, version, f"{config.dataset.name}-{p.family}-{run.info.run_id}")
        # The driver only plans and collects reports: its peak must not grow with the data (workers read it).
        driver_peak = peak_rss_mb()
        mlflow.log_metric("memory/driver_peak_rss_mb", driver_peak)
        if result.checkpoint is None:
            raise RuntimeError(f"training ended without a checkpoint ({result.error})")
        with result.checkpoint.as_directory() as directory:
            summary = log_trained(config, p, Path(directory))
        summary = {"run_id": run.info.run_id, "training_run": run.info.run_id, **summary,
                   "checkpoint": result.checkpoint.path, "driver_peak_rss_mb": driver_peak,
                   "worker_peak_rss_mb": [max(ranks) for ranks in zip(*(r["worker_peak_rss_mb"] for r in summary["history"]), strict=True)]}
        if p.parent is not None:
            summary["parent"] = p.parent_ref
    return summary
