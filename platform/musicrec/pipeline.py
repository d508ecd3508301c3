"""The whole local flow: generate (if the data is absent) -> ingest -> preprocess -> evaluate."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from musicrec.config import Config

log = logging.getLogger(__name__)


def _data_present(config: Config) -> bool:
    flat = Path(config.data.root) / "flat" / config.data.size
    return (flat / "listens.parquet").exists() or (flat / "multi_event.parquet").exists()


def run_generate(config: Config) -> dict[str, Any]:
    """Write the configured synthetic preset as a Yambda-layout root at ``data.root``/``data.size``."""
    from musicrec.data.generator import generate, preset

    params = preset(config.generate.preset, seed=config.seed, write_sequential=config.generate.write_sequential)
    summary = generate(params, config.data.root, size=config.data.size, progress=config.runtime.progress)
    keep = ("n_users", "n_items", "counts", "familiar_share", "skip_share")
    return {"data_root": config.data.root, **{k: summary[k] for k in keep if k in summary}}


def run_pipeline(config: Config) -> dict[str, Any]:
    from musicrec.data.ingest import run_ingest
    from musicrec.evaluate.job import run_evaluate
    from musicrec.prep.job import run_preprocess
    from musicrec.runtime.spark import get_spark

    summary: dict[str, Any] = {}
    steps = 4
    t0 = time.perf_counter()
    if _data_present(config):
        log.info("[1/%d] data present under %s: not regenerating", steps, config.data.root)
    else:
        log.info("[1/%d] generating preset %s into %s", steps, config.generate.preset, config.data.root)
        summary["generate"] = run_generate(config)
    spark = get_spark(config, app_name="musicrec-pipeline")
    log.info("[2/%d] ingest", steps)
    summary["ingest"] = run_ingest(config, spark)
    log.info("[3/%d] preprocess", steps)
    summary["preprocess"] = run_preprocess(config, spark)
    spark.stop()  # evaluation needs no Spark: give its memory back
    log.info("[4/%d] evaluate", steps)
    summary["evaluate"] = run_evaluate(config)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["lake"] = str(Path(config.lake.root) / config.dataset.name)
    summary["mlflow_ui"] = f"mlflow ui --backend-store-uri sqlite:///{Path(config.mlflow.local_dir).resolve()}/mlflow.db"
    return summary
