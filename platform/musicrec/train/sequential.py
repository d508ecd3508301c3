"""``musicrec train`` for the sequential families: a Ray Train ``TorchTrainer`` job.

The driver pins the `sequences` version, builds a lazy Ray Data stream of the training rows
(one per worker, narrowed to its users) without reading any of them, starts the trainer
(``ScalingConfig`` / ``FailureConfig`` / ``RunConfig`` from ``train.*``), and, once it ends,
is the only process that writes to MLflow: the per-epoch history and the best weights come
back in the final checkpoint, so a restarted worker never logs twice and the SQLite store
never sees two writers. The best epoch's model is then saved as a run artifact and evaluated
on the holdout test users of its task.

Fine-tuning (models.md): ``train.init_from`` names a trained model (an MLflow run id with a
``model`` artifact, or a saved model folder). Its architecture, weights and item vocabulary
are kept; learning rate, batch, epochs and patience come from this run's ``model.*``, the
training sequence from ``train.*``. The run records its parent.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow

from musicrec.config import Config
from musicrec.contract import parse_name, task
from musicrec.errors import InputError
from musicrec.models import FittedModel, family_class, load_model
from musicrec.retrieval.index import log_index
from musicrec.train.loop import (
    VALIDATION_METRIC,
    WorkerSpec,
    best_weights,
    checkpoint_items,
    load_state,
    train_worker,
)
from musicrec.train.stream import sequences_version, training_dataset, worker_datasets

log = logging.getLogger(__name__)

SEQUENTIAL_FAMILIES = ("sasrec", "gsasrec", "bert4rec")
# Settings a fine-tuning run takes from its own config; everything else is the parent's.
FINE_TUNE_KEYS = ("learning_rate", "batch_size", "max_epochs", "patience")
TABLES_READ = ("sequences", "holdout_examples")


def validation_task(config: Config) -> str:
    """``train.task``, or the task the training sequence serves (lh/disc: discovery, fam: familiar)."""
    kind, domain = parse_name(config.train.sequence)
    default = {("track", False): "T1", ("track", True): "T2", ("artist", False): "T3", ("artist", True): "T4"}
    name = config.train.task or default[(domain, kind == "fam")]
    if task(name).domain != domain:
        raise InputError(f"train.task={name} is a {task(name).domain} task but train.sequence={config.train.sequence}")
    return name


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


def trainer_for(config: Config, spec: WorkerSpec, datasets: dict, name: str):
    """The TorchTrainer of the job: scaling, failures and storage from ``train.*``."""
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
            storage_path=str(Path(t.storage_path).resolve()) if "://" not in t.storage_path else t.storage_path,
            failure_config=FailureConfig(max_failures=t.max_failures),
            # The latest checkpoint to resume from and the one before it (in case the latest is cut short).
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
        # Each worker reads its own dataset whole: sharding is by user, decided in data.worker_datasets.
        dataset_config=DataConfig(datasets_to_split=[]),
    )


def run_sequential_train(config: Config, run_name: str = "train") -> dict[str, Any]:
    """Train ``model.family`` (sasrec/gsasrec/bert4rec) on Ray Train; log and return the summary."""
    import ray
    from ray.data import DataContext

    from musicrec.evaluate.protocols import EvalOptions, evaluate_holdout, format_results, log_results
    from musicrec.runtime.mlflow_setup import setup_mlflow
    from musicrec.runtime.ray_setup import init_ray
    from musicrec.tracking.runs import log_lineage

    family = config.model.family
    if family not in SEQUENTIAL_FAMILIES:
        raise InputError(f"model.family={family} is not a sequential family ({', '.join(SEQUENTIAL_FAMILIES)})")
    t = config.train
    if t.protocol != "holdout":
        # Early stopping needs validation users: the holdout's; GTS validation windows are not wired in.
        raise InputError(f"sequential training validates on holdout users; train.protocol={t.protocol} is not supported")
    task_name = validation_task(config)
    parent, parent_ref = resolve_parent(t.init_from) if t.init_from else (None, "")
    if parent is not None and parent.model.family != family:
        raise InputError(f"train.init_from is a {parent.model.family} model but model.family={family}")
    settings = model_config(config, family, parent)  # validated before Ray starts

    init_ray(config)
    DataContext.get_current().enable_progress_bars = False
    version = sequences_version(config.lake.root, config.dataset.name, t.protocol, t.sequence, t.k,
                                t.sequences_version)
    rows = training_dataset(config.lake.root, config.dataset.name, t.protocol, t.sequence, t.k, version)

    setup_mlflow(config)
    # Nested under a caller's active run (a benchmark) rather than failing on it.
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        log_lineage(config, TABLES_READ)
        mlflow.log_params({"family": family, "sequence": t.sequence, "k": t.k, "protocol": t.protocol, "task": task_name, "workers": t.workers,
                           "use_gpu": t.use_gpu, "sharding": t.sharding, "sequences_version_read": version})
        mlflow.log_params({f"model.{key}": value for key, value in settings.items()})
        mlflow.set_tags({"family": family, "sequence": t.sequence, "task": task_name})
        if parent is not None:
            mlflow.set_tags({"parent_model": parent_ref, "fine_tuned_from": parent.name})

        storage = Path(t.storage_path) if "://" not in t.storage_path else None
        name = f"{config.dataset.name}-{family}-{run.info.run_id}"
        spec = WorkerSpec(
            family=family,
            model_config=settings,
            seed=config.seed,
            items=ray.put(parent.items.ids) if parent is not None else None,
            sharding=t.sharding,
            batch_size=settings["batch_size"],
            max_epochs=settings["max_epochs"],
            patience=settings["patience"],
            checkpoint_every_steps=t.checkpoint_every_steps,
            mixed_precision=t.mixed_precision,
            lake_root=str(Path(config.lake.root).resolve()) if "://" not in config.lake.root else config.lake.root,
            dataset=config.dataset.name,
            task=task_name,
            sequence=t.sequence,
            k=t.k,
            val_batch_size=t.val_batch_size,
            parent_state=ray.put(parent.model.state()) if parent is not None else None,
            fail_at_step=t.fail_at_step,
            fail_marker=str(storage.resolve() / name / "injected_failure") if storage is not None else "",
        )
        result = trainer_for(config, spec, worker_datasets(rows, t.workers, t.sharding), name).fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training ended without a checkpoint ({result.error})")
        with result.checkpoint.as_directory() as directory:
            state = load_state(Path(directory))
            weights = best_weights(Path(directory))
            items = checkpoint_items(Path(directory))
        mlflow.log_param("n_items", len(items))

        for record in state.history:
            step = int(record["epoch"])
            mlflow.log_metrics({"train/loss": record["loss"], f"val/{task_name}/ndcg_at_100": record["metric"],
                                "train/epoch_seconds": record["seconds"]}, step=step)
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(str(plot_curve(state.history, Path(tmp) / "training_curve.png")), "plots")

        model = family_class(family)(family_class(family).Config.model_validate(settings), seed=config.seed)
        model.init_network(len(items))
        if weights is not None:
            model.network.load_state_dict(weights)
        model.network.eval()
        fitted = FittedModel(f"{family}[{t.sequence}]", model, items, t.sequence, t.k)
        with tempfile.TemporaryDirectory() as tmp:
            fitted.save(Path(tmp) / "model")
            mlflow.log_artifacts(str(Path(tmp) / "model"), "model")
        log_index(fitted, config.retrieval, config.seed)  # the run's `index` artifact (retrieval)
        test = evaluate_holdout([fitted], config.lake.root, config.dataset.name, "test", [task_name],
                                EvalOptions(ks=tuple(config.evaluate.ks), metrics=("ndcg", "recall", "hr")))
        log_results(test, artifact_file="evaluation/test_results.csv")
        mlflow.log_metrics({"best_epoch": state.best_epoch, f"best/{VALIDATION_METRIC}": state.best_metric,
                            "epochs_trained": len(state.history)})
        summary = {
            "run_id": run.info.run_id,
            "training_run": run.info.run_id,
            "family": family,
            "sequence": t.sequence,
            "k": t.k,
            "task": task_name,
            "epochs": len(state.history),
            "device": state.device,
            "bf16": state.bf16,
            "best_epoch": state.best_epoch,
            VALIDATION_METRIC: state.best_metric,
            "history": state.history,
            "checkpoint": result.checkpoint.path,
            "test": format_results(test),
        }
        ndcg = test[(test.metric == "ndcg") & (test.k == max(config.evaluate.ks))]
        summary[f"test_ndcg_at_{max(config.evaluate.ks)}"] = float(ndcg.value.iloc[0]) if len(ndcg) else math.nan
        if parent is not None:
            summary["parent"] = parent_ref
    return summary
