"""The body of a classic family's Ray task: read the pinned training sequences and fit.

Apart from :mod:`musicrec.train.classic` (MLflow, evaluation, faiss) because Ray pickles the
task's function by reference: the worker imports its module, and every import there is start-up
time of the job. This module imports what the fit needs and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from musicrec.errors import InputError
from musicrec.lake.readers import read_training_sequences
from musicrec.models import family_class, fit_model
from musicrec.runtime.hugepages import apply_numpy_hugepages
from musicrec.train.tasks import model_name, sequence_tasks

if TYPE_CHECKING:
    from musicrec.config import Config
    from musicrec.config.models import FamilyConfig
    from musicrec.models import FittedModel


def fit_from_lake(config: Config, version: int | None) -> FittedModel:
    """Read the pinned training sequences and fit ``config.model`` (the body of the Ray task)."""
    apply_numpy_hugepages(config.runtime.numpy_hugepages)  # a cluster's workers do not inherit the driver's environment
    t = config.train
    cls = family_class(config.model.family)
    data = read_training_sequences(
        config.lake.root, config.dataset.name, t.protocol, t.sequence, t.k, version, timestamps=cls.uses_timestamps
    )
    if not len(data.items.values):
        raise InputError(
            f"no training sequences for ({t.protocol}, {t.sequence}, k={t.k}) in version {version} of "
            f"{config.lake.root}/{config.dataset.name}/sequences"
        )
    return fit_model(
        model_name(config),
        cls(with_task_threads(config.model), seed=config.seed),
        data.items,
        sequence=t.sequence,
        k=t.k,
        tasks=sequence_tasks(t.sequence),
        timestamps=data.timestamps,
    )


def with_task_threads(model_config: FamilyConfig) -> FamilyConfig:
    """``num_threads: 0`` ("every core") made the CPUs Ray gave this task. Ray sets a worker's
    OMP_NUM_THREADS to its task's CPUs, so a family left to OpenMP's default would otherwise run
    one thread under a task reserving one CPU, and contend with other tasks under a larger one."""
    import ray

    if getattr(model_config, "num_threads", None) != 0 or not ray.is_initialized():
        return model_config
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # called in the driver: OpenMP's default is every core
        return model_config
    cpus = context.get_assigned_resources().get("CPU")
    return model_config.model_copy(update={"num_threads": int(cpus)}) if cpus else model_config
