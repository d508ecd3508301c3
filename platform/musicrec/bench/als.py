"""``musicrec bench als`` (spec/performance.md): the whole ALS training job against implicit's fit alone.

Both sides run in the same process on the same data: the job (read the pinned training sequences
from Delta, index the items, build the user × item matrix, fit, save the model folder), with the
fit running as the Ray task of ``musicrec train``; then ``implicit``'s ``fit`` alone on the same
matrix with the same settings and threads (the CPUs the job's task reserved). The bar: job at
most 1.25× the fit alone. Ray's start-up is a fixed cost of the process, reported separately and
not counted in the job. Each side runs three times, alternating, and the medians are compared:
single runs of the job moved by 13% between consecutive runs here (14.3 s to 16.1 s), half the bar.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from musicrec.arrays import Ragged
from musicrec.config import Config
from musicrec.config.models import ALSConfig
from musicrec.lake.readers import read_training_sequences
from musicrec.models.als import ALS
from musicrec.models.base import TrainingData
from musicrec.models.items import ItemIndex

# Each side runs this many times; the figures are the medians.
REPEATS = 3


def bench_als(config: Config, dataset: str) -> dict[str, Any]:
    import ray

    from musicrec.runtime.ray_setup import init_ray
    from musicrec.train.classic import fit_on_ray, pinned_version, task_cpus

    model_config = config.model if isinstance(config.model, ALSConfig) else ALSConfig(factors=64)
    update: dict[str, Any] = {"dataset": config.dataset.model_copy(update={"name": dataset}), "model": model_config}
    config = config.model_copy(update=update)
    t = config.train
    version = pinned_version(config)  # both sides read this version; a missing table is a one-line error
    out: dict[str, Any] = {"dataset": dataset, "factors": model_config.factors, "iterations": model_config.iterations}

    started = time.perf_counter()
    init_ray(config)
    out["ray_start_seconds"] = time.perf_counter() - started
    try:
        threads = task_cpus(config)
        # The fit alone: the same matrix built the same way (not timed), with the job's threads.
        data = read_training_sequences(
            config.lake.root, dataset, t.protocol, t.sequence, t.k, version, timestamps=False
        )
        items, dense_values = ItemIndex.indexing(data.items.values)
        shell = ALS(model_config.model_copy(update={"num_threads": threads}), seed=config.seed)
        matrix = shell.matrix(TrainingData(Ragged(dense_values, data.items.offsets), len(items)))
        jobs, fits = [], []
        # Alternated, so that a drift of the machine's speed reaches both sides alike.
        for _ in range(REPEATS):
            with tempfile.TemporaryDirectory(prefix="musicrec-bench-als-") as tmp:
                started = time.perf_counter()
                fitted = fit_on_ray(config, version)
                fitted.save(Path(tmp) / "model")
                jobs.append(time.perf_counter() - started)
            mf = shell._implicit()
            started = time.perf_counter()
            with threadpool_limits(1, "blas"):
                mf.fit(matrix, show_progress=False)
            fits.append(time.perf_counter() - started)
    finally:
        ray.shutdown()
    out.update(job_seconds=float(np.median(jobs)), fit_alone_seconds=float(np.median(fits)), threads=threads)
    out["ratio_job_to_fit"] = out["job_seconds"] / out["fit_alone_seconds"]
    out.update(job_runs=[round(x, 2) for x in jobs], fit_alone_runs=[round(x, 2) for x in fits])
    out.update(users=matrix.shape[0], items=matrix.shape[1], nonzeros=int(matrix.nnz), events=len(data.items.values))
    out["same_factors"] = bool(np.array_equal(mf.item_factors, fitted.model.item_embeddings()))
    return out
