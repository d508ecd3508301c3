"""The lake on object storage: a local S3-compatible server (moto) started on 127.0.0.1 and stopped
afterwards, Spark through s3a (hadoop-aws from `make setup`) and delta-rs through its S3 client.
Snapshots on both write paths; ingest, preprocess and evaluate with data and lake on S3."""

from __future__ import annotations

import socket

import mlflow
import pytest

from conftest import REPO, TEST_OVERRIDES
from musicrec.config import load_config
from musicrec.data.generator import generate, preset
from musicrec.lake import delta, manifest
from musicrec.lake.snapshot import JobSnapshot
from musicrec.lake.tables import table_path
from musicrec.runner import run_verb
from ports import free_port

BUCKET = "lake"


@pytest.fixture(scope="module")
def s3(spark):
    """A moto S3 server on 127.0.0.1 with one bucket; delta-rs, pyarrow and Spark pointed at it."""
    import subprocess
    import sys
    import time

    import boto3

    # Its own process: an in-process server thread needs the GIL, which delta-rs holds while it waits on S3.
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        hadoop = spark.sparkContext._jsc.hadoopConfiguration()
        for k, v in {
            "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",  # as conf/cluster.yaml sets it
            "fs.s3a.endpoint": endpoint,
            "fs.s3a.endpoint.region": "us-east-1",
            "fs.s3a.path.style.access": "true",
            "fs.s3a.connection.ssl.enabled": "false",
            "fs.s3a.access.key": "testing",
            "fs.s3a.secret.key": "testing",
            "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        }.items():
            hadoop.set(k, v)
        yield f"s3://{BUCKET}"
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.parametrize("writer", ["spark_delta", "delta_rs"])
def test_a_job_snapshot_on_s3_reads_back_through_delta_rs_and_spark(spark, s3, config_for, writer):
    config = config_for(f"lake.root={s3}/{writer}", f"lake.writer={writer}")
    tables = ("events", "user_splits")

    def run(uid):
        with JobSnapshot(spark, config, job="j") as snap:
            for t in tables:
                snap.stage(t, spark.createDataFrame([(uid, t)], "uid int, what string"))
            return snap.publish()

    assert run(1) == dict.fromkeys(tables, 0)
    assert run(2) == dict.fromkeys(tables, 1)
    for t in tables:
        path = table_path(config.lake.root, config.dataset.name, t)
        assert path.startswith("s3://")
        assert delta.read_arrow(path).to_pylist() == [{"uid": 2, "what": t}]
        assert [tuple(r) for r in delta.read_table(spark, path).collect()] == [(2, t)]
        assert [tuple(r) for r in delta.read_table(spark, path, version=0).collect()] == [(1, t)]
    assert manifest.published(f"{config.lake.root}/{config.dataset.name}") == dict.fromkeys(tables, 1)


def _upload(folder, bucket_prefix: str) -> None:
    import boto3

    bucket, prefix = bucket_prefix.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3")  # endpoint and credentials from the fixture's AWS_* variables
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")


def test_ingest_preprocess_and_evaluate_on_s3_equal_the_same_flow_on_local_disk(spark, s3, tmp_path):
    """Data and lake on S3 (Spark through s3a, the Arrow readers through delta-rs): every table and
    every metric equals the same three verbs on local folders."""

    generate(preset("tiny"), tmp_path / "data", progress=False)
    _upload(tmp_path / "data", f"{s3}/data")

    def config(data_root: str, lake_root: str, experiment: str):
        return load_config(
            [str(REPO / "conf" / "datasets" / "synthetic-tiny.yaml")],
            [*TEST_OVERRIDES, f"data.root={data_root}", f"lake.root={lake_root}", "evaluate.protocols=[holdout]",
             f"mlflow.local_dir={tmp_path / 'mlflow'}", f"mlflow.experiment={experiment}"],
        )

    on_s3 = config(f"{s3}/data", f"{s3}/e2e", "s3")
    local = config(str(tmp_path / "data"), str(tmp_path / "lake"), "local")
    results = {}
    for name, config in (("s3", on_s3), ("local", local)):
        run_verb("ingest", config, spark)
        run_verb("preprocess", config, spark)
        summary = run_verb("evaluate", config)
        results[name] = mlflow_metrics(summary["mlflow_run"])
    assert results["s3"] and results["s3"] == results["local"]
    # (stats hold timings and file names, which differ by design)
    for table in ("events", "quarantine", "sequences", "user_splits", "holdout_examples"):
        remote = table_path(on_s3.lake.root, "synthetic-tiny", table)
        here = table_path(local.lake.root, "synthetic-tiny", table)
        assert remote.startswith("s3://")
        rows = [sorted(map(repr, delta.read_arrow(p).to_pylist())) for p in (remote, here)]
        assert rows[0] == rows[1], table


def mlflow_metrics(run_id: str) -> dict[str, float]:
    # Quality metrics only: the run's wall-clock time differs by design.
    return {k: v for k, v in mlflow.get_run(run_id).data.metrics.items() if "seconds" not in k}
