"""``musicrec train`` for the classic families: one Ray task, MLflow run with config, lineage,
validation and test metrics and the model; ``musicrec evaluate`` of that trained model; and real
``ray job submit``s of ``jobs/train.py`` (ALS, and gSASRec on Ray Train) to one local Ray head with
token authentication on.

The head is started here on 127.0.0.1 only, with every port it opens chosen free (other Ray
clusters may run on this machine), in its own session so that it is stopped by its process group
afterwards: never `ray stop`, which would stop every Ray on the machine."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import ray
import torch
from numpy._core.multiarray import _set_madvise_hugepage

from musicrec.arrays import Ragged
from musicrec.bench.als import bench_als
from musicrec.cli import main
from musicrec.config import load_config
from musicrec.errors import InputError
from musicrec.evaluate.protocols import _metric_name
from musicrec.lake.readers import read_training_sequences
from musicrec.models import load_model
from musicrec.runner import run_verb
from musicrec.runtime.hugepages import numpy_hugepage_advice
from musicrec.runtime.ray_setup import init_ray
from musicrec.train.classic import fit_on_ray, task_cpus
from musicrec.train.fit_task import fit_from_lake
from musicrec.train.job import run_train
from ports import free_port
from toy_lake import write_toy_lake
from train_lake import write_lake

# Every test here runs the train verb, which fits in a Ray task (in-process Ray, or a head it starts).
pytestmark = [pytest.mark.ray, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
ALS_SMALL = ("model.family=als", "model.factors=8", "model.iterations=3")


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> str:
    return write_toy_lake(tmp_path_factory.mktemp("lake"))


def settings(lake: str, mlflow_dir: Path, *extra: str) -> list[str]:
    return [
        f"lake.root={lake}",
        "dataset.name=toy",
        f"mlflow.local_dir={mlflow_dir}",
        "runtime.ray.num_cpus=1",
        "evaluate.ks=[5,10]",
        *extra,
    ]


def test_train_logs_config_lineage_metrics_and_the_model_which_evaluate_reproduces(lake, tmp_path, monkeypatch):
    overrides = settings(lake, tmp_path / "mlflow", *ALS_SMALL, "train.sequence=disc_track", f"train.output_dir={tmp_path / 'out'}")
    config = load_config(overrides=overrides)
    summary = run_train(config)

    run = mlflow.get_run(summary["mlflow_run"])
    params, metrics = run.data.params, run.data.metrics
    assert (params["family"], params["training_sequence"], params["protocol"]) == ("als", "disc_track", "holdout")
    assert params["sequences_version"] == params["table_version.sequences"] == "0"
    assert params["model.factors"] == "8" and run.data.tags["git_commit"]
    # An on-task model is evaluated on its task only, on both holdout splits.
    assert {"val/T1/ndcg_at_10", "test/T1/ndcg_at_10", "test/T1/recall_at_10"} <= set(metrics)
    assert not any("/T2/" in m for m in metrics)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model", "evaluation"} <= artifacts

    # The logged model is the fit of the pinned sequences (deterministic), also kept in output_dir.
    logged = load_model(mlflow.artifacts.download_artifacts(artifact_uri=summary["model_uri"], dst_path=str(tmp_path / "dl")))
    direct = fit_from_lake(config, 0)
    assert (logged.name, logged.sequence, logged.tasks) == ("als[disc_track]", "disc_track", ("T1",))
    histories = Ragged.from_lists([[0, 1, 2], [5]])
    assert torch.equal(logged.model.score(histories), direct.model.score(histories))
    assert np.array_equal(load_model(tmp_path / "out").model.item_embeddings(), direct.model.item_embeddings())

    # `musicrec evaluate` of the trained model (by run id) gives the train run's test metrics, and
    # leaves no download of the model behind.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    evaluated = run_verb(
        "evaluate",
        load_config(overrides=settings(lake, tmp_path / "mlflow", "evaluate.protocols=[holdout]", f"evaluate.model_uri={run.info.run_id}"))
    )
    assert not list((tmp_path / "tmp").glob("musicrec-model-*"))
    again = mlflow.get_run(evaluated["mlflow_run"]).data.metrics
    for name in ("ndcg_at_10", "recall_at_10", "ndcg_at_5"):
        assert again[_metric_name(f"all/test/T1/{name}")] == metrics[f"test/T1/{name}"]


def test_the_fit_task_reserves_the_cpus_its_threads_use(lake, tmp_path):
    # Ray sets a worker's OMP_NUM_THREADS to its task's CPUs: implicit's "every core" (0) must be
    # those CPUs, all of one node, or the job fits on one thread while implicit alone uses all.
    def config(*extra: str, model: tuple[str, ...] = ALS_SMALL):
        return load_config(overrides=settings(lake, tmp_path / "mlflow", *model, "runtime.ray.num_cpus=2", *extra))

    init_ray(config())
    try:
        assert task_cpus(config()) == 2
        fitted = fit_on_ray(config(), 0)
        assert fitted.model.mf.num_threads == 2
        assert task_cpus(config("model.num_threads=1")) == 1
        assert fit_on_ray(config("model.num_threads=1"), 0).model.mf.num_threads == 1
        assert task_cpus(config("train.num_cpus=1")) == 1
        assert fit_on_ray(config("train.num_cpus=1"), 0).model.mf.num_threads == 1
        assert task_cpus(config(model=("model.family=mostpop",))) == 1
    finally:
        ray.shutdown()
    # Thread counts do not change ALS's factors.
    _set_madvise_hugepage(True)
    assert np.array_equal(fitted.model.item_embeddings(), fit_from_lake(config(), 0).model.item_embeddings())
    # The task body applies runtime.numpy_hugepages itself: a cluster's workers do not inherit the driver's variable.
    assert numpy_hugepage_advice() is False


def test_bench_als_times_the_job_and_implicit_alone_on_the_same_matrix(lake, tmp_path):
    config = load_config(overrides=settings(lake, tmp_path / "mlflow", *ALS_SMALL, "runtime.ray.num_cpus=2"))
    out = bench_als(config, "toy")
    # The job's factors are implicit's own on the matrix the fit alone used, with the same threads.
    assert out["same_factors"] and out["threads"] == 2 and out["factors"] == 8
    assert len(out["job_runs"]) == len(out["fit_alone_runs"]) == 3
    assert abs(out["job_seconds"] - sorted(out["job_runs"])[1]) <= 0.005  # the median (runs are rounded)
    assert out["ratio_job_to_fit"] == out["job_seconds"] / out["fit_alone_seconds"]
    rows = read_training_sequences(lake, "toy", "holdout", "lh_track", 1).items
    assert (out["users"], out["items"], out["events"]) == (len(rows), len(np.unique(rows.values)), len(rows.values))
    assert out["nonzeros"] == sum(len(set(row.tolist())) for row in rows.to_lists())
    with pytest.raises(InputError, match="no sequences table at .*absent"):
        bench_als(config, "absent")


def test_train_errors_are_one_line(lake, tmp_path, capsys):
    # EASE above its catalogue bound: raised inside the Ray task, reported as the user's error.
    code = main(["train", *settings(lake, tmp_path / "mlflow", "model.family=ease", "model.max_items=10")])
    err = capsys.readouterr().err
    assert code == 1 and "above model.max_items=10" in err and "Traceback" not in err
    code = main(["evaluate", *settings(lake, tmp_path / "mlflow", "evaluate.protocols=[holdout]", f"evaluate.model_uri={tmp_path / 'nothing'}")])
    err = capsys.readouterr().err
    assert code == 1 and "evaluate.model_uri" in err and "Traceback" not in err


def start_head(ray_bin: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    # Every port chosen free: other Ray clusters on the machine hold the defaults (e.g. the agent's 52365).
    names = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
             "--node-manager-port", "--object-manager-port")  # fmt: skip
    ports = {name: free_port() for name in names}
    temp_dir = tempfile.mkdtemp(prefix="rayt")  # short: Ray's socket paths must fit in 107 bytes
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         *(f"{k}={v}" for k, v in ports.items())],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    return head, f"http://127.0.0.1:{ports['--dashboard-port']}"


def stop_head(head: subprocess.Popen) -> None:
    """SIGTERM to the head's process group (``ray start --block`` and every process it started)."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    except ProcessLookupError:
        head.wait()


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with token authentication, shared by this module's submissions
    (starting one takes most of a minute), stopped afterwards by its process group."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "PYTHONPATH": str(REPO / "platform"),
        # A single-machine head: `ray start` would otherwise replace 127.0.0.1 by the machine's address.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # On SIGTERM `ray start --block` otherwise drains the node for up to 30 s (for Serve replicas,
        # of which there are none here) before stopping its processes.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    ray_bin = str(Path(sys.executable).parent / "ray")
    # On a loaded machine Ray's client server can time out registering and `--block` then stops
    # the head: start again (a fresh head, fresh ports) up to three times.
    for _attempt in range(3):
        head, address = start_head(ray_bin, env)
        deadline = time.time() + 240
        while time.time() < deadline and head.poll() is None:
            probe = subprocess.run([ray_bin, "job", "list", "--address", address], env=env, capture_output=True)
            if probe.returncode == 0:
                time.sleep(35)  # past the client server's 30 s registration window
                if head.poll() is None:
                    break
            time.sleep(3)
        if head.poll() is None and time.time() < deadline:
            break
        stop_head(head)
    else:
        pytest.fail("no Ray head came up in three attempts")
    try:
        yield address, env
    finally:
        stop_head(head)


def submit(address: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``ray job submit --address <head> <args>``, again while the head's job agent is not up yet."""
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address, *args]
    for _attempt in range(30):
        submitted = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        # The job server answers before the node's job agent is up; Ray says to try again later.
        if "No available agent" not in submitted.stderr + submitted.stdout:
            break
        time.sleep(5)
    return submitted


def test_ray_job_submit_of_jobs_train_with_token_auth(ray_head, lake, tmp_path):
    address, env = ray_head
    ray_bin = str(Path(sys.executable).parent / "ray")
    # Without the token the job server refuses the submission.
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(tmp_path)}
    refused = subprocess.run([ray_bin, "job", "list", "--address", address], env=no_token, capture_output=True, text=True)
    assert refused.returncode != 0

    overrides = settings(lake, tmp_path / "mlflow", *ALS_SMALL, f"train.output_dir={tmp_path / 'out'}", "train.register=true")
    submitted = submit(address, env, "--working-dir", str(REPO / "jobs"), "--", sys.executable, "train.py", *overrides)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "succeeded" in submitted.stdout
    saved = load_model(tmp_path / "out")
    assert saved.model.family == "als" and saved.sequence == "lh_track"
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["config"]["factors"] == 8

    # The registered model, promoted and then evaluated by its alias, each a submitted job.
    common = settings(lake, tmp_path / "mlflow")
    for job, *args in (("promote.py", "promote.task=T1", "promote.family=als", "promote.metric=ndcg_at_10"),
                       ("evaluate.py", "evaluate.protocols=[holdout]", "evaluate.model_uri=models:/toy.T1.als@champion")):
        done = submit(address, env, "--working-dir", str(REPO / "jobs"), "--", sys.executable, job, *common, *args)
        assert done.returncode == 0 and "succeeded" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    evaluated, trained = runs["evaluate"].data.metrics, runs["train als[lh_track]"].data.metrics
    assert evaluated[_metric_name("all/test/T1/ndcg_at_10")] == trained["test/T1/ndcg_at_10"]


def test_ray_job_submit_trains_gsasrec_and_fails_cleanly(ray_head, tmp_path):
    address, env = ray_head
    lake = write_lake(tmp_path / "lake")
    common = (
        f"lake.root={lake}", "dataset.name=walks", f"mlflow.local_dir={tmp_path / 'mlflow'}",
        f"train.storage_path={tmp_path / 'ray'}", "model.embedding_dim=16", "model.ffn_dim=16",
        "model.num_blocks=1", "model.max_len=12", "model.batch_size=32", "model.negatives=8",
        "model.gbce_alpha=null", "model.max_epochs=2", "train.workers=2", "train.cpus_per_worker=0.5",
        "runtime.log_level=WARNING",
    )
    runtime_env = json.dumps({"env_vars": {"PYTHONPATH": str(REPO / "platform")}})

    def train(*overrides: str) -> subprocess.CompletedProcess:
        return submit(address, env, "--runtime-env-json", runtime_env, "--", sys.executable,
                      str(REPO / "jobs" / "train.py"), "--config", str(REPO / "conf" / "local.yaml"),
                      "--config", str(REPO / "conf" / "models" / "gsasrec.yaml"), *overrides)

    done = train(*common)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    # The job's own output is streamed back by `ray job submit`.
    assert "val_ndcg_at_100:" in done.stdout and "succeeded" in done.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["walks/default"])
    # The verb's run, and inside it the one training run.
    training = runs[runs["params.family"].notna()]
    assert len(runs) == 2 and len(training) == 1
    assert training["params.family"].iloc[0] == "gsasrec" and training["params.workers"].iloc[0] == "2"
    verb_run = runs[runs["params.family"].isna()]["run_id"].iloc[0]
    assert training["tags.mlflow.parentRunId"].iloc[0] == verb_run

    failed = train(*common, "dataset.name=absent")
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert "no sequences" in output and "run `musicrec preprocess` for dataset absent first" in output
