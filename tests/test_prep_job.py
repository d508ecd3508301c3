"""The preprocessing job as users run it: atomic staged commits, re-runs, spark-submit, a standalone cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import polars as pl
import pyspark
import pytest

from conftest import TEST_OVERRIDES, random_events
from musicrec.config import load_config
from musicrec.lake.delta import read_arrow, table_version
from musicrec.lake.snapshot import JobSnapshot
from musicrec.lake.tables import table_path
from musicrec.prep import stats
from musicrec.prep.job import OUTPUT_TABLES, run_preprocess
from ports import free_port

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
SMALL = (
    "runtime.spark.shuffle_partitions=2",
    "preprocess.popularity.min_users=3",
    "preprocess.popularity.recent_window=30",
    "holdout.gt_size=4",
    "holdout.split_ratios=[0.6,0.2,0.2]",
    "gts.test_size=172800",
    "gts.val_size=172800",
    "gts.gap=3600",
)


def contents(lake_root: str, dataset: str) -> dict[str, list[tuple]]:
    """Every output table as sorted rows (lists compared as lists)."""
    out = {}
    for table in OUTPUT_TABLES:
        df = pl.from_arrow(read_arrow(table_path(lake_root, dataset, table)))
        df = df.select(sorted(df.columns))
        out[table] = sorted(df.iter_rows(), key=repr)
    return out


def publish_events(spark, lake_root: str, dataset: str, events) -> None:
    """An events table as ingest leaves it: committed and published in the dataset's snapshot."""
    config = load_config(overrides=(*TEST_OVERRIDES, f"lake.root={lake_root}", f"dataset.name={dataset}"))
    with JobSnapshot(spark, config, job="ingest") as snap:
        snap.stage("events", spark.createDataFrame(events))
        snap.publish()


def versions(lake_root: str, dataset: str) -> dict[str, int]:
    return {t: table_version(table_path(lake_root, dataset, t)) for t in OUTPUT_TABLES}


def test_rerun_is_identical_and_a_failed_run_changes_nothing(spark, config_for, monkeypatch):
    config = config_for(*SMALL)
    root, dataset = config.lake.root, config.dataset.name
    publish_events(spark, root, dataset, random_events(3000, seed=5))

    first = run_preprocess(config, spark)
    before = contents(root, dataset)
    assert all(before[t] for t in OUTPUT_TABLES)
    assert all(first[f"version.{t}"] == 0 for t in OUTPUT_TABLES)

    second = run_preprocess(config, spark)
    assert all(second[f"version.{t}"] == 1 for t in OUTPUT_TABLES)
    assert contents(root, dataset) == before

    # Fail after sequences, splits and examples were staged, before anything was committed.
    def broken(*args, **kwargs):
        raise RuntimeError("injected failure while building stats")

    monkeypatch.setattr(stats, "stats_frame", broken)
    with pytest.raises(RuntimeError, match="injected failure"):
        run_preprocess(config, spark)
    assert versions(root, dataset) == {t: 1 for t in OUTPUT_TABLES}
    assert contents(root, dataset) == before


def test_missing_events_is_a_clear_input_error(spark, config_for):
    from musicrec.errors import InputError

    with pytest.raises(InputError, match="no events table"):
        run_preprocess(config_for(), spark)


# ---------------------------------------------------------------- the real entry point


def submit_preprocess(spark_submit, master: str, lake: Path, *options: str):
    overrides = (f"lake.root={lake}", f"mlflow.local_dir={lake.parent / 'mlflow'}", "dataset.name=submit",
                 "runtime.progress=false")
    return spark_submit("preprocess", *overrides, *SMALL, master=master, options=options)


@pytest.fixture(scope="module")
def events_lake(spark, tmp_path_factory) -> Path:
    """A lake holding only an events table, copied by each submit test."""
    lake = tmp_path_factory.mktemp("submit") / "lake"
    publish_events(spark, str(lake), "submit", random_events(3000, seed=9))
    return lake


def _fresh_lake(events_lake: Path, target: Path) -> Path:
    shutil.copytree(events_lake, target)
    return target


@pytest.fixture(scope="module")
def local_submit(events_lake, tmp_path_factory, spark_submit) -> tuple[subprocess.CompletedProcess, Path]:
    lake = _fresh_lake(events_lake, tmp_path_factory.mktemp("local") / "lake")
    return submit_preprocess(spark_submit, "local[2]", lake), lake


def test_spark_submit_local(local_submit):
    result, lake = local_submit
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "version.sequences: 0" in result.stdout
    tables = contents(str(lake), "submit")
    assert all(tables[t] for t in OUTPUT_TABLES)


def _alive_workers(webui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except (OSError, ValueError):  # not listening yet, or still serving its HTML page while starting
        return 0


@pytest.fixture
def standalone_master(tmp_path):
    """A Spark standalone master and one worker (2 cores, 2g) on 127.0.0.1, stopped afterwards.

    Yields the master URL and the worker's work directory (one folder per application it ran).
    """
    port, webui = free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(tmp_path)}
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process below
        processes.append(
            subprocess.Popen([str(SPARK_CLASS), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        )

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(webui))  # fmt: skip
        start("worker", "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1",
              "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()),
              "--work-dir", str(tmp_path / "work"))  # fmt: skip
        deadline = time.monotonic() + 120
        while _alive_workers(webui) < 1:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                logs = "\n".join((tmp_path / f"{n}.log").read_text()[-2000:] for n in ("master", "worker"))
                pytest.fail(f"standalone cluster did not come up:\n{logs}")
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}", tmp_path / "work"
    finally:
        for p in reversed(processes):
            p.terminate()
        for p in reversed(processes):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_standalone_cluster_matches_local(standalone_master, local_submit, events_lake, tmp_path, spark_submit):
    master, work_dir = standalone_master
    local_result, local_lake = local_submit
    assert local_result.returncode == 0, local_result.stderr[-2000:]
    lake = _fresh_lake(events_lake, tmp_path / "lake")
    # Only --master names the cluster (the config keeps local[*]): spark-submit's master must win.
    result = submit_preprocess(spark_submit, master, lake, "--executor-memory", "1g", "--total-executor-cores", "2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # The work really ran in executors of the standalone worker.
    executor_logs = list(work_dir.glob("app-*/*/stderr"))
    assert executor_logs and any("Finished task" in f.read_text() for f in executor_logs)
    assert contents(str(lake), "submit") == contents(str(local_lake), "submit")
