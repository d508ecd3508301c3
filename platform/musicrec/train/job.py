"""The one ``train`` job: classic families fit as one Ray task, sequential ones under Ray Train."""

from __future__ import annotations

from typing import Any

from musicrec.config import Config
from musicrec.config.models import CLASSIC_FAMILIES


def run_train(config: Config) -> dict[str, Any]:
    if config.model.family in CLASSIC_FAMILIES:
        from musicrec.train.classic import run_classic

        return run_classic(config)
    from musicrec.train.sequential import run_sequential_train

    return run_sequential_train(config)
