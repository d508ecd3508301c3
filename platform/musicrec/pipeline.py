"""The whole local flow: a declared list of verbs, each run as its own MLflow run under the pipeline's.

Later work extends the flow by adding verbs to :data:`STEPS`, each one registry entry in
:mod:`musicrec.verbs`. ``grid`` (train, register and promote the experiment's cells) and ``report``
run when the config declares a grid (``grid.cells`` or ``grid.baselines``); ``recommend`` runs when ``recommend.model`` names a
trained model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from musicrec.config import Config

log = logging.getLogger(__name__)

STEPS: tuple[str, ...] = ("generate", "ingest", "preprocess", "evaluate", "grid", "recommend", "report")


def data_present(config: Config) -> bool:
    flat = Path(config.data.root) / "flat" / config.data.size
    return (flat / "listens.parquet").exists() or (flat / "multi_event.parquet").exists()


def _data_present(config: Config) -> str | None:
    return f"its output is present under {config.data.root}" if data_present(config) else None


def _no_model(config: Config) -> str | None:
    return None if config.recommend.model else "no recommend.model given"


def _no_grid(config: Config) -> str | None:
    return None if config.grid.declared else "the config declares no grid (grid.cells, grid.baselines)"


# Why a step is skipped (None: it runs): the pipeline generates only absent data, trains and reports
# a grid only when the experiment declares one, and recommends only when told which trained model to use.
SKIP_WHEN: dict[str, Callable[[Config], str | None]] = {
    "generate": _data_present,
    "grid": _no_grid,
    "recommend": _no_model,
    "report": _no_grid,
}


def run_generate(config: Config) -> dict[str, Any]:
    """Write the configured synthetic preset as a Yambda-layout root at ``data.root``/flat/``data.size``.

    ``--preset`` sets both ``generate.preset`` and ``data.size``. When a config sets them apart, the
    folder is ``data.size`` (what ingest reads) and the command says so.
    """
    from musicrec.data.generator import generate, preset

    if config.generate.preset != config.data.size:
        log.warning(
            "generate.preset=%s is written as data.size=%s (into flat/%s); use --preset to set both",
            config.generate.preset, config.data.size, config.data.size,
        )
    params = preset(config.generate.preset, seed=config.seed, write_sequential=config.generate.write_sequential)
    summary = generate(params, config.data.root, size=config.data.size, progress=config.runtime.progress)
    keep = ("n_users", "n_items", "counts", "familiar_share", "skip_share")
    return {
        "data_root": config.data.root,
        "written": str(Path(config.data.root) / "flat" / config.data.size),
        **{k: summary[k] for k in keep if k in summary},
    }


def _stop_spark() -> None:
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


def run_pipeline(config: Config) -> dict[str, Any]:
    from musicrec.runner import run_verb
    from musicrec.runtime.mlflow_setup import ui_hint
    from musicrec.verbs import REGISTRY

    summary: dict[str, Any] = {}
    skipped = {step: SKIP_WHEN[step](config) if step in SKIP_WHEN else None for step in STEPS}
    for i, step in enumerate(STEPS, 1):
        if skipped[step]:
            log.info("[%d/%d] %s: skipped, %s", i, len(STEPS), step, skipped[step])
            continue
        log.info("[%d/%d] %s", i, len(STEPS), step)
        summary[step] = run_verb(step, config)
        if REGISTRY[step].spark and not any(REGISTRY[later].spark and not skipped[later] for later in STEPS[i:]):
            _stop_spark()  # the later steps need no Spark: give its memory back
    summary["lake"] = str(Path(config.lake.root) / config.dataset.name)
    summary["mlflow_ui"] = ui_hint(config)
    return summary
