"""``musicrec recommend``: a model's top-K per user and task into the ``recommendations`` table.

Who: the holdout users of ``recommend.split`` (default test), each with the history
``holdout_examples`` holds for the task (its domain, before the cutoff): the evaluator's users and
inputs, so a written list is the evaluated one. Which tasks: ``recommend.tasks``, default every
holdout task the model serves (a registered model serves its one task).

How: the model (``recommend.model``: a run id, ``runs:/``, ``models:/<name>@<alias>`` or
``/<version>``) and the index logged with its training run are saved into one folder that Spark
ships to its workers; ``mapInArrow`` ranks the users a batch of ``recommend.batch_size`` at a time,
so memory is bounded by the batch, not by the number of users.

Written: the table's rows of other models stay, this model's rows (``model`` = the reference as
given, a run id spelt ``runs:/<id>/model``) are replaced, in one overwrite published as a job
snapshot (:mod:`musicrec.lake.snapshot`). A run that fails before publishing leaves readers on the
previous version; its commit carries the MLflow run id and config hash like every job's.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa

from musicrec.arrays import Ragged
from musicrec.config import Config
from musicrec.config.schema import RetrievalConfig
from musicrec.contract import HOLDOUT_TASKS
from musicrec.contract.schemas import RECOMMENDATIONS, spark_schema
from musicrec.errors import ConfigError, InputError
from musicrec.lake.readers import table_exists
from musicrec.lake.snapshot import JobSnapshot
from musicrec.models import FittedModel
from musicrec.retrieval.index import describe, run_index
from musicrec.retrieval.retriever import Retriever

log = logging.getLogger(__name__)

TABLE = "recommendations"
_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ModelRef:
    label: str  # the ``model`` column
    run_id: str | None  # the training run (its index artifact); None for a saved folder
    version: str | None = None  # a registered model's version


def resolve(uri: str) -> ModelRef:
    """The training run and registered version behind a model reference."""
    if _RUN_ID.fullmatch(uri):
        return ModelRef(f"runs:/{uri}/model", uri)
    if uri.startswith("runs:/"):
        return ModelRef(uri, uri.removeprefix("runs:/").split("/", 1)[0])
    if uri.startswith("models:/"):
        name, at, alias = uri.removeprefix("models:/").partition("@")
        client = mlflow.MlflowClient()
        try:
            if at:
                version = client.get_model_version_by_alias(name, alias)
            else:
                name, _, number = name.partition("/")
                version = client.get_model_version(name, number)
        except Exception as e:  # noqa: BLE001 - MLflow raises several types for an unknown name or alias
            raise InputError(f"recommend.model={uri!r}: no such registered model version ({e})") from None
        return ModelRef(uri, version.run_id, str(version.version))
    return ModelRef(str(Path(uri).resolve()), None)


def check_recommend(config: Config, spark: Any = None) -> None:
    if not config.recommend.model:
        raise ConfigError(
            "recommend needs a model: recommend.model=<run id | runs:/... | models:/<name>@<alias>>"
        )


def tasks_of(config: Config, fitted: FittedModel) -> list[str]:
    wanted = list(config.recommend.tasks) or [t for t in HOLDOUT_TASKS if fitted.runs_on(t)]
    foreign = [t for t in wanted if not fitted.runs_on(t)]
    if foreign or not wanted:
        raise InputError(f"{config.recommend.model} ({fitted.name}) does not serve {', '.join(foreign) or 'any holdout task'}")
    return wanted


def run_recommend(config: Config, spark: Any) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from musicrec.evaluate.job import load_trained

    rec = config.recommend
    ref = resolve(rec.model)
    fitted = load_trained(rec.model, key="recommend.model")
    tasks = tasks_of(config, fitted)
    has_embeddings = fitted.model.item_embeddings() is not None
    index = run_index(ref.run_id, fitted, config.retrieval, config.seed) if has_embeddings else None
    retriever = Retriever(fitted, index, config.retrieval)
    mlflow.log_params(
        {
            "model": ref.label,
            "model_run": ref.run_id or "",
            "model_version": ref.version or "",
            "tasks": ",".join(tasks),
            "index": ",".join(f"{k}={v}" for k, v in describe(index).items()) if index is not None else "none",
        }
    )
    bundle = Path(tempfile.mkdtemp(prefix="musicrec-recommend-")) / f"bundle-{uuid.uuid4().hex}"
    try:
        # Shipped to every worker (on a cluster the driver's temp folder is not theirs).
        retriever.save(bundle)
        spark.sparkContext.addFile(str(bundle), recursive=True)
        lineage = {"model": ref.label, "model_run": ref.run_id or "", "model_version": ref.version or ""}
        with JobSnapshot(spark, config, job="recommend", metadata=lineage) as snap:
            users = (
                snap.read("holdout_examples")
                .where((F.col("split") == rec.split) & F.col("task").isin(tasks))
                .select("uid", "task", "history_items")
            )
            ranked = users.mapInArrow(
                functools.partial(
                    rank_batches,
                    bundle=bundle.name,
                    label=ref.label,
                    k=rec.k,
                    batch_size=rec.batch_size,
                    settings=config.retrieval,
                ),
                spark_schema(RECOMMENDATIONS),
            )
            if table_exists(snap.path(TABLE)):
                # Other models' lists stay; this model's are replaced.
                ranked = snap.read(TABLE).where(F.col("model") != ref.label).unionByName(ranked)
            staged = snap.stage(TABLE, ranked)
            versions = snap.publish()
    finally:
        shutil.rmtree(bundle.parent, ignore_errors=True)
    log.info("recommendations of %s for %s written (version %d)", ref.label, ", ".join(tasks), versions[TABLE])
    return {"model": ref.label, "tasks": tasks, "rows": staged.rows, "version": versions[TABLE]}


@functools.lru_cache(maxsize=2)
def _retriever(folder: str, settings: RetrievalConfig) -> Retriever:
    # Once per Python worker, not once per Arrow batch.
    return Retriever.load(Path(folder), settings)


def rank_batches(
    batches: Iterator[pa.RecordBatch], *, bundle: str, label: str, k: int, batch_size: int, settings: RetrievalConfig
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: (uid, task, history_items) rows in, their recommendation rows out."""
    from pyspark import SparkFiles

    retriever = _retriever(SparkFiles.get(bundle), settings)
    for batch in batches:
        tasks = batch.column("task").to_numpy(zero_copy_only=False)
        uids = batch.column("uid").to_numpy(zero_copy_only=False)
        history = Ragged.from_arrow(batch.column("history_items"))
        for task in sorted(set(tasks)):
            rows = np.flatnonzero(tasks == task)
            for start in range(0, len(rows), batch_size):
                part = rows[start : start + batch_size]
                items, scores = retriever.top_k(history.take(part), task, k)
                yield _rows(uids[part], task, label, items, scores)


def _rows(uids: np.ndarray, task: str, label: str, items: np.ndarray, scores: np.ndarray) -> pa.RecordBatch:
    # A familiar task's short history gives fewer than K items: the -1 padding is dropped.
    kept = items >= 0
    offsets = np.zeros(len(items) + 1, dtype=np.int32)
    np.cumsum(kept.sum(axis=1), out=offsets[1:])
    return pa.RecordBatch.from_arrays(
        [
            pa.array(uids, pa.int32()),
            pa.array([task] * len(uids), pa.string()),
            pa.array([label] * len(uids), pa.string()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(items[kept], pa.int32())),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(scores[kept], pa.float32())),
        ],
        schema=RECOMMENDATIONS,
    )
