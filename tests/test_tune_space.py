"""The sweep's search space (``tune.space``): validated before any work, turned into Tune's
distributions with the documented bounds, and applied to a trial's config by dotted key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicrec.config import ConfigError, load_config
from musicrec.tune.space import check_space, distribution, search_space, trial_config

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize(
    "given, message",
    [
        ("{type: int, low: 5, high: 2}", "low must be below high"),
        ("{type: uniform, low: 1.0, high: 1.0}", "low must be below high"),
        ("{type: loguniform, low: 0.0, high: 1.0}", "low > 0"),
        ("{type: int, low: 1.5, high: 4}", "whole-number bounds"),
        ("{type: choice, values: []}", "non-empty `values`"),
        ("{type: choice, values: [1], low: 0}", "no low/high"),
        ("{type: uniform, low: 0.1}", "takes `low` and `high`"),
        ("{type: normal, low: 0.1, high: 1}", "type"),
    ],
)
def test_bad_dimensions_are_config_errors(given, message):
    with pytest.raises(ConfigError, match="tune.space") as err:
        load_config(overrides=[f"tune.space={{model.factors: {given}}}"])
    assert message in str(err.value)


@pytest.mark.parametrize("key", ["model.family", "dataset.name", "lake.root", "evaluate.ks"])
def test_only_model_train_and_seed_keys_are_swept(key):
    with pytest.raises(ConfigError, match="only model.\\*, train.\\* and seed"):
        load_config(overrides=[f"tune.space={{{key}: {{type: choice, values: [1]}}}}"])


def test_a_space_that_makes_an_invalid_config_fails_before_any_trial():
    als = ["model.family=als"]
    check_space(load_config(overrides=[*als, "tune.space={model.factors: {type: int, low: 2, high: 8}}"]))
    with pytest.raises(ConfigError, match="model.factors.*valid integer"):
        check_space(load_config(overrides=[*als, "tune.space={model.factors: {type: uniform, low: 2, high: 8}}"]))
    with pytest.raises(ConfigError, match="not a key of the model section"):
        check_space(load_config(overrides=[*als, "tune.space={model.learning_rate: {type: uniform, low: 0.1, high: 1}}"]))
    with pytest.raises(ConfigError, match="model.regularization"):
        check_space(load_config(overrides=[*als, "tune.space={model.regularization: {type: uniform, low: -1, high: 1}}"]))
    with pytest.raises(ConfigError, match="needs a search space"):
        check_space(load_config(overrides=als))


def test_int_bounds_are_inclusive_and_floats_stay_inside():
    from ray.tune.search.sample import Integer

    rng = np.random.default_rng(0)
    ints = distribution(load_config(overrides=["tune.space={model.factors: {type: int, low: 3, high: 5}}"]).tune.space["model.factors"])
    assert isinstance(ints, Integer)
    drawn = set(ints.sample(size=400, random_state=rng))
    assert drawn == {3, 4, 5}
    space = load_config(
        overrides=["tune.space={model.a: {type: loguniform, low: 0.001, high: 0.1}, model.b: {type: choice, values: [x, y]}}"]
    ).tune.space
    tune_space = search_space(space)
    logs = np.array(tune_space["model.a"].sample(size=400, random_state=rng))
    assert logs.min() >= 0.001 and logs.max() <= 0.1
    # Log-uniform: about as many draws below the geometric middle (0.01) as above it.
    assert 0.35 < (logs < 0.01).mean() < 0.65
    assert set(tune_space["model.b"].sample(size=50, random_state=rng)) == {"x", "y"}


def test_trial_config_sets_dotted_keys_and_keeps_the_rest():
    base = load_config(overrides=["model.family=als", "seed=3", "train.sequence=disc_track"]).model_dump(mode="json")
    config = trial_config(base, {"model.factors": np.int64(48), "model.regularization": np.float64(0.5), "train.k": 3})
    assert (config.model.factors, config.model.regularization, config.train.k) == (48, 0.5, 3)
    assert type(config.model.factors) is int
    assert (config.seed, config.train.sequence, config.model.iterations) == (3, "disc_track", 15)
    assert base["model"]["factors"] == 20  # the base is not changed
    with pytest.raises(ConfigError, match="train.k"):
        trial_config(base, {"train.k": 0})


@pytest.mark.parametrize("preset", sorted((CONF / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_have_valid_spaces(preset):
    config = load_config([preset])
    check_space(config)
    assert config.tune.num_samples >= 4 and config.tune.space


def test_concurrent_sequential_trials_must_leave_a_cpu_for_reading_their_data():
    from musicrec.tune.sweep import check_local_cpus

    sweep = ["model.family=gsasrec", "tune.max_concurrent=2", "tune.cpus_per_trial=0.1"]
    check_local_cpus(load_config(overrides=[*sweep, "train.cpus_per_worker=0.4"]), 2)
    with pytest.raises(ConfigError, match="leave no CPU of this 2-CPU Ray"):
        check_local_cpus(load_config(overrides=[*sweep, "train.cpus_per_worker=1.0"]), 2)
    check_local_cpus(load_config(overrides=[*sweep, "train.cpus_per_worker=1.0"]), 4)
    # A classic trial reads its data inside its own reservation.
    check_local_cpus(load_config(overrides=["model.family=als", "tune.max_concurrent=2"]), 2)
