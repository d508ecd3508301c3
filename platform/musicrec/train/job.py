"""The one ``train`` job: classic families fit as one Ray task, sequential ones under Ray Train;
with ``train.register``, the trained model is registered at the end (as ``musicrec register``)."""

from __future__ import annotations

from typing import Any

from musicrec.config import Config
from musicrec.config.models import CLASSIC_FAMILIES


def run_train(config: Config) -> dict[str, Any]:
    if config.model.family in CLASSIC_FAMILIES:
        from musicrec.train.classic import run_classic

        summary = run_classic(config)
    else:
        from musicrec.train.sequential import run_sequential_train

        summary = run_sequential_train(config)
    if config.train.register:
        from musicrec.registry.register import register_run

        summary["registered"] = register_run(config, summary["training_run"])
    return summary
