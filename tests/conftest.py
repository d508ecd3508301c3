"""Shared fixtures: one real local Spark session for the whole test run (starting one costs seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from musicrec.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]

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


@pytest.fixture(scope="session")
def spark_submit():
    """Run ``jobs/<job>.py`` under the real ``spark-submit`` from the repository root.

    spark-submit starts the Python driver itself, before any of our code runs, so the venv's
    interpreter is named here for the driver and the workers.
    """

    def run(job: str, *args: str, master: str = "local[2]", options: tuple[str, ...] = (), timeout: int = 420):
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        command = [str(Path(sys.executable).parent / "spark-submit"), "--master", master, *options, f"jobs/{job}.py"]
        return subprocess.run(
            [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    return run
