"""Shared fixtures and the test tiers.

Tiers (markers registered in pyproject.toml): ``unit`` runs in this process on tiny data, with no
Spark JVM and no subprocess job (``make test-fast``); ``spark`` starts a local Spark JVM;
``cluster`` a standalone Spark cluster; ``ray`` starts Ray; ``gpu`` needs a CUDA device;
``learning`` trains a small model until it learns (tens of seconds); ``integration`` runs a real
job end to end in its own process. Tests are marked by the fixtures
they use (below) or explicitly; every test left unmarked is ``unit``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pytest

from musicrec.config import Config, load_config
from musicrec.contract import EVENT_TYPES
from musicrec.contract.schemas import EVENTS as EVENTS_SCHEMA

REPO = Path(__file__).resolve().parents[1]

TIERS = ("spark", "cluster", "ray", "gpu", "learning", "integration")
# A test that uses one of these fixtures (directly or through another fixture) is in these tiers.
FIXTURE_TIERS = {
    "spark": ("spark",),
    "spark_submit": ("spark", "integration"),
    "standalone_master": ("spark", "cluster"),
}


def pytest_collection_modifyitems(config, items):
    gpu_missing = None
    for item in items:
        for fixture, tiers in FIXTURE_TIERS.items():
            if fixture in item.fixturenames:
                for tier in tiers:
                    item.add_marker(tier)
        tiers = {m.name for m in item.iter_markers()} & set(TIERS)
        if item.get_closest_marker("unit") is not None and tiers:
            raise pytest.UsageError(f"{item.nodeid} is marked unit but also {sorted(tiers)}")
        if not tiers:
            item.add_marker("unit")
        if "gpu" in tiers:
            if gpu_missing is None:
                import torch

                gpu_missing = not torch.cuda.is_available()
            if gpu_missing:
                # The one legitimate skip: the hardware is not there.
                item.add_marker(pytest.mark.skip(reason="no CUDA device on this machine"))


def pytest_sessionfinish(session, exitstatus):
    """A unit-only run that started a Spark JVM means a test is in the wrong tier."""
    items = getattr(session, "items", [])
    if not items or any(item.get_closest_marker("unit") is None for item in items):
        return
    pyspark = sys.modules.get("pyspark")
    if pyspark is not None and pyspark.SparkContext._gateway is not None:
        print("\nERROR: a unit test started a Spark JVM; mark it spark (or use the spark fixture)", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Which Delta write path a run exercised: the engine each commit names in its commitInfo.
ENGINES = {"spark_delta": "Apache-Spark/", "delta_rs": "delta-rs:"}


def delta_commits_by_engine(root: Path) -> dict[str, tuple[int, int]]:
    """Per write path: (commits, test folders holding them) of the Delta logs under ``root``, whose
    first level is one folder per test (or per module fixture), or, under pytest-xdist, one folder
    per worker (``popen-gwN``) holding those."""
    commits: dict[str, int] = dict.fromkeys(ENGINES, 0)
    folders: dict[str, set[str]] = {engine: set() for engine in ENGINES}
    for entry in root.rglob("_delta_log/*.json"):
        for line in entry.read_text().splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info is None:
                continue
            written_by = str(info.get("engineInfo") or info.get("clientVersion") or "")
            for engine, prefix in ENGINES.items():
                if written_by.startswith(prefix):
                    commits[engine] += 1
                    parts = entry.relative_to(root).parts
                    folders[engine].add("/".join(parts[:2] if parts[0].startswith("popen-gw") else parts[:1]))
    return {engine: (commits[engine], len(folders[engine])) for engine in ENGINES}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Both Delta write paths must run in ``make test``: say how much each did."""
    # The base of every test's tmp_path; under pytest-xdist this is the controller's, which holds
    # the workers' (xdist derives their --basetemp from it).
    root = config._tmp_path_factory.getbasetemp()
    if not root.is_dir():
        return
    counts = delta_commits_by_engine(root)
    if any(commits for commits, _ in counts.values()):
        terminalreporter.write_line(
            "Delta commits by write path: "
            + "; ".join(f"{engine} {commits} in {folders} test folders" for engine, (commits, folders) in counts.items())
        )


@pytest.fixture(autouse=True)
def _mlflow_left_as_found():
    """No test leaks an MLflow tracking or registry URI or an active run into the next one.

    ``mlflow.set_tracking_uri`` and ``mlflow.set_registry_uri`` also export ``MLFLOW_TRACKING_URI``
    and ``MLFLOW_REGISTRY_URI``, and MLflow then ignores a later change of the variables: a store
    set by one test would silently receive another's runs, or answer its registry queries.
    """
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {name: os.environ.get(name) for name in names}
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # back to unset (the variables are restored below)
    mlflow.set_registry_uri(None)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _logging_left_as_found():
    """No test leaks the root logging handlers into the next one.

    ``musicrec.cli.main`` configures logging (``basicConfig(force=True)``) onto the ``sys.stderr`` of
    the moment, which under ``capsys`` is a capture that is closed after the test: a later test's
    log line would hit the closed stream and print a "Logging error" traceback into its stderr.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def track_into(uri: str) -> str:
    """Point MLflow at ``uri`` for the rest of this test (``_mlflow_left_as_found`` resets it).

    Through ``mlflow.set_tracking_uri``, which MLflow honours over ``MLFLOW_TRACKING_URI``.
    """
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def mlflow_store(tmp_path) -> str:
    """An MLflow store of this test's own (SQLite and artifacts under ``tmp_path``); its URI.

    Tests that run a job get theirs from the config instead (``mlflow.local_dir`` under their
    ``tmp_path``, see ``config_for``); either way the URI is reset after the test.
    """
    (tmp_path / "mlflow-store").mkdir()
    return track_into(f"sqlite:///{tmp_path / 'mlflow-store' / 'mlflow.db'}")


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


@pytest.fixture(scope="module")
def ray_local():
    """One in-process Ray for a module's training runs (each would otherwise start its own)."""
    import ray

    from musicrec.runtime.ray_setup import init_ray

    init_ray(load_config(overrides=("runtime.ray.num_cpus=1",)))
    yield
    ray.shutdown()


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


def random_events(n_events: int, seed: int = 0, days: int = 30) -> pa.Table:
    """Events with the features the transform must handle, vectorised.

    Heavy-tailed history lengths; about 60% of listens repeat an earlier track of the same
    user (pointer jumping resolves chains of repeats); Zipf-like new tracks; 5% of tracks
    unmapped; timestamps multiples of 5 with ties; exact duplicate events; null and skip
    ratios; likes, unlikes and the other event types.
    """
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, rng.lognormal(np.log(60), 1.0, size=max(1, n_events // 60)).astype(np.int64))
    lengths = lengths[np.cumsum(lengths) <= n_events] if lengths.sum() > n_events else lengths
    n = int(lengths.sum())
    uid = np.repeat(np.arange(len(lengths), dtype=np.int64) * 7 + 3, lengths)
    start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    ts = rng.integers(0, days * 86_400 // 5, n) * 5
    ts = ts[np.lexsort((ts, uid))]  # uid is sorted already: this sorts each user's times
    n_items = max(50, n // 40)
    fresh = (rng.zipf(1.3, n) - 1) % n_items
    idx = np.arange(n)
    repeat = (rng.random(n) < 0.6) & (idx > start)
    parent = np.where(repeat, start + (rng.random(n) * (idx - start)).astype(np.int64), idx)
    for _ in range(int(math.log2(max(2, lengths.max()))) + 2):
        parent = parent[parent]
    item = fresh[parent]
    dup = rng.random(n) < 0.01
    item = np.concatenate([item, item[dup]])
    uid = np.concatenate([uid, uid[dup]])
    ts = np.concatenate([ts, ts[dup]])
    n = len(item)
    kind = rng.choice(len(EVENT_TYPES), size=n, p=[0.9, 0.05, 0.02, 0.02, 0.01])
    ratio = np.where(rng.random(n) < 0.3, rng.integers(0, 20, n), rng.integers(20, 130, n))
    null_ratio = (rng.random(n) < 0.02) | (kind != 0)
    artist = item // 4
    unmapped = (item % 20) == 7
    return pa.Table.from_arrays(
        [
            pa.array(uid, pa.int32()),
            pa.array(item, pa.int32()),
            pa.array(artist, pa.int32(), mask=unmapped),
            pa.array(item // 10, pa.int32()),
            pa.array(ts, pa.int64()),
            pa.array(np.array(EVENT_TYPES, dtype=object)[kind], pa.string()),
            pa.array(rng.random(n) < 0.5),
            pa.array(ratio, pa.int32(), mask=null_ratio),
            pa.array(np.full(n, 200), pa.int32(), mask=null_ratio),
        ],
        schema=EVENTS_SCHEMA,
    )


def corrupt_data_pages(path: Path) -> None:
    """Flip every byte of a Parquet file's column chunks (pages and page headers), keeping its
    header magic and footer intact: the schema still reads, the data does not."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for group in range(meta.num_row_groups):
        for column in range(meta.num_columns):
            chunk = meta.row_group(group).column(column)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            for i in range(start, start + chunk.total_compressed_size):
                data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert pq.ParquetFile(path).metadata.num_rows == meta.num_rows  # the footer is intact


def truncate(path: Path) -> None:
    """Cut a file in half, as an interrupted copy leaves it (its footer is gone)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
