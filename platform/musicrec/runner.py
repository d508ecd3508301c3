"""Run one verb with the shape every verb shares.

1. check its inputs (the lake tables it reads, the files it needs, the MLflow store the profile
   needs) before anything is opened or written: a user error leaves no run and no output;
2. open one MLflow run named after the verb that records the resolved config (``config.yaml`` and
   flat params), the git commit, a config hash, and the Delta table versions it read and wrote as
   MLflow datasets (contexts ``input`` / ``output``);
3. run the verb's library function while every Delta commit records the run id and config hash
   (:mod:`musicrec.lake.provenance`), so a table version leads back to its run.

A user error found only while running (e.g. too much quarantined) removes the run instead of
leaving a FAILED one; nothing was committed. A bug keeps its FAILED run and its traceback.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import mlflow

from musicrec.config import Config
from musicrec.errors import InputError, MusicrecError, NotBuiltError
from musicrec.lake.provenance import recording
from musicrec.lake.readers import table_exists
from musicrec.lake.tables import table_path
from musicrec.runtime.mlflow_setup import setup_mlflow, tracking_uri
from musicrec.tracking.runs import READ, WRITTEN, config_hash, log_config, log_tables, table_versions
from musicrec.verbs import REGISTRY, Verb, writer_of

log = logging.getLogger("musicrec")


def check_inputs(verb: Verb, config: Config) -> None:
    """What a verb needs from the user that no engine is needed to see: checked before any engine starts.

    A Spark verb's own check takes the session, so :func:`run_verb` calls it once Spark is up.
    """
    if not verb.built:
        raise NotBuiltError(f"{verb.help} is not built yet")
    tracking_uri(config)  # the cluster profile without an MLflow server fails here
    checker = verb.checker()
    if checker is not None and not verb.spark:
        checker(config)
    missing = [
        table
        for table in verb.tables_read(config)
        if not table_exists(table_path(config.lake.root, config.dataset.name, table))
    ]
    if missing:
        where = f"{config.lake.root}/{config.dataset.name}"
        raise InputError(
            f"no {', '.join(missing)} table{'s' if len(missing) > 1 else ''} in the lake at {where}; "
            f"run `musicrec {writer_of(missing[0])}` for dataset {config.dataset.name} first"
        )


def run_verb(name: str, config: Config, spark: Any = None) -> dict[str, Any]:
    """Check, then run verb ``name`` as one MLflow run (nested when a run is active, as in the pipeline).

    A Spark verb gets ``spark`` or the profile's session. Returns the verb's summary plus its run id.
    """
    verb = REGISTRY[name]
    check_inputs(verb, config)
    if verb.spark:
        if spark is None:
            from musicrec.runtime.spark import get_spark

            spark = get_spark(config, app_name=f"musicrec-{name}")
        checker = verb.checker()
        if checker is not None:
            checker(config, spark)  # e.g. ingest lists its files on Spark's file systems
    setup_mlflow(config, verb.experiment or None, per_dataset=not verb.experiment)
    reads = table_versions(config, verb.tables_read(config))
    run = mlflow.start_run(run_name=name, nested=True)
    run_id = run.info.run_id
    started = time.perf_counter()
    try:
        log_config(config, name)
        log_tables(config, reads, READ)
        with recording({"mlflow_run_id": run_id, "config_hash": config_hash(config), "verb": name}):
            summary = verb.function()(config, spark) if verb.spark else verb.function()(config)
        log_tables(config, table_versions(config, verb.writes), WRITTEN)
        mlflow.log_metric("seconds", time.perf_counter() - started)
        mlflow.log_text(json.dumps(summary, indent=2, default=str), "summary.json")
    except MusicrecError:
        # The user's to fix and nothing was committed: no FAILED run left behind.
        mlflow.end_run("KILLED")
        mlflow.MlflowClient().delete_run(run_id)
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run()
    log.info("%s finished in %.1f s (MLflow run %s)", name, time.perf_counter() - started, run_id)
    return {**summary, "mlflow_run": run_id}
