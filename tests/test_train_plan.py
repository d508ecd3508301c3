"""What a sequential training run validates on, decided before Ray starts: the task and, under the
global temporal split, the stage (the validation one: its window picks the epoch)."""

from __future__ import annotations

import pytest

from musicrec.config import load_config
from musicrec.errors import InputError
from musicrec.train.sequential import plan
from musicrec.train.tasks import validation_task


@pytest.mark.parametrize(
    ("overrides", "task"),
    [
        ((), "T1"),
        (("train.sequence=fam_track",), "T2"),
        (("train.sequence=lh_artist", "train.task=T4"), "T4"),
        (("train.protocol=gts_val_listen_plus",), "next_track"),
        (("train.protocol=gts_val_like", "train.sequence=lh_artist"), "next_artist"),
        (("train.protocol=gts_val_like", "train.sequence=disc_track"), "T1"),
    ],
)
def test_validation_task_follows_the_protocol_and_sequence(overrides, task):
    config = load_config(overrides=("model.family=sasrec", *overrides))
    assert validation_task(config) == task
    assert plan(config).task == task


def test_sequential_training_under_the_gts_trains_on_the_validation_stage():
    config = load_config(overrides=("model.family=gsasrec", "train.protocol=gts_test_like"))
    with pytest.raises(InputError, match="trains on the validation stage \\(gts_val_like\\)"):
        plan(config)
