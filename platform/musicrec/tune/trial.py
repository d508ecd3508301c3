"""One trial of a sweep, run by Ray Tune in its own actor.

Trials never write to MLflow: they report to Tune, and the driver (the one process with the
tracking store open) logs every trial as a child run. A classic family reports once, with its
saved model as the checkpoint; a sequential family runs a Ray Train job whose per-epoch reports
reach Tune through Ray Train's ``TuneReportCallback`` (Ray 2.60's Tune–Train pattern), so ASHA
can stop it between epochs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from musicrec.train.loop import VALIDATION_METRIC
from musicrec.tune.space import trial_config


def classic_trial(params: dict, base: dict, version: int) -> None:
    from ray import tune

    from musicrec.lake.readers import load_holdout
    from musicrec.train.fit_task import fit_from_lake
    from musicrec.train.tasks import validation_ndcg, validation_task

    config = trial_config(base, params)
    fitted = fit_from_lake(config, version)
    task_name = validation_task(config)
    examples = load_holdout(config.lake.root, config.dataset.name, "val", [task_name])[0]
    value = validation_ndcg(fitted, examples, config.train.val_batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        fitted.save(Path(tmp) / "model")
        tune.report({VALIDATION_METRIC: value}, checkpoint=tune.Checkpoint.from_directory(tmp))


def sequential_trial(params: dict, base: dict, version: int) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from musicrec.train.sequential import fit_on_ray_train, plan

    config = trial_config(base, params)
    name = f"{config.dataset.name}-{config.model.family}-{tune.get_context().get_trial_id()}"
    result = fit_on_ray_train(config, plan(config), version, name, callbacks=(TuneReportCallback(),))
    if result.error is not None:
        raise result.error
