"""The one ``train`` job: classic families fit as one Ray task, sequential ones under Ray Train."""

from __future__ import annotations

from typing import Any

from musicrec.config import Config
from musicrec.config.models import CLASSIC_FAMILIES
from musicrec.errors import InputError


def run_train(config: Config) -> dict[str, Any]:
    if config.model.family in CLASSIC_FAMILIES:
        from musicrec.train.classic import run_classic

        return run_classic(config)
    raise InputError(f"training the sequential family {config.model.family!r} (Ray Train) is not built yet")
