"""Shared fixtures: one real local Spark session for the whole test run (starting one costs seconds)."""

from __future__ import annotations

import pytest

from musicrec.config import Config, load_config

# Small settings so several engines fit on a 2-core CI machine.
TEST_OVERRIDES = (
    "runtime.spark.master=local[2]",
    "runtime.spark.shuffle_partitions=4",
    "runtime.spark.driver_memory=3g",
    "runtime.progress=false",
)


@pytest.fixture(scope="session")
def spark():
    from musicrec.runtime.spark import get_spark

    session = get_spark(load_config(overrides=TEST_OVERRIDES), app_name="musicrec-tests")
    yield session
    session.stop()


@pytest.fixture
def config_for(tmp_path):
    """A validated config rooted in ``tmp_path`` (lake, data, MLflow), plus any extra overrides."""

    def make(*overrides: str) -> Config:
        return load_config(
            overrides=(
                *TEST_OVERRIDES,
                f"lake.root={tmp_path / 'lake'}",
                f"data.root={tmp_path / 'data'}",
                f"mlflow.local_dir={tmp_path / 'mlflow'}",
                *overrides,
            )
        )

    return make
