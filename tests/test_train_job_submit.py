"""`ray job submit` of a gSASRec training against a real local Ray head with token authentication.

The head is started by the test on 127.0.0.1 only, with every port it opens chosen free (other
Ray clusters may run on this machine), in its own session so that it is stopped by its process
group afterwards: never `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from train_lake import write_lake

pytestmark = [pytest.mark.ray, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_head() -> tuple[subprocess.Popen, str]:
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env = _free_ports(7)
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
         "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
         "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
         "--runtime-env-agent-port", str(runtime_env), "--num-cpus", "2", "--temp-dir", temp],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return head, f"http://127.0.0.1:{dashboard}"


def _stop(head: subprocess.Popen) -> None:
    """SIGTERM to the head's process group (the head and everything it started), SIGKILL if it lingers."""
    if _group_alive(head.pid):
        os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    deadline = time.monotonic() + 60
    while _group_alive(head.pid) and time.monotonic() < deadline:
        time.sleep(1)
    if _group_alive(head.pid):
        os.killpg(head.pid, signal.SIGKILL)


def _ready(head: subprocess.Popen, address: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and head.poll() is None:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=5)
            return True
        except urllib.error.HTTPError:
            return True  # it answers (401 without the token: authentication is on)
        except OSError:
            time.sleep(2)
    return False


@pytest.fixture
def ray_head():
    # A head whose raylet misses Ray's fixed 30 s registration window (a loaded machine) exits:
    # stop what is left of it and start another.
    for _ in range(3):
        head, address = _start_head()
        if _ready(head, address, 240):
            break
        _stop(head)
    else:
        raise RuntimeError("the Ray head did not start in 3 attempts")
    try:
        yield address
    finally:
        _stop(head)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _submit(address: str, *overrides: str) -> subprocess.CompletedProcess:
    runtime_env = {"env_vars": {"PYTHONPATH": str(REPO / "platform")}}
    return subprocess.run(
        [RAY, "job", "submit", "--address", address, "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(REPO / "conf" / "local.yaml"),
         "--config", str(REPO / "conf" / "models" / "gsasrec.yaml"), *overrides],
        env={**os.environ, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=900, check=False,
    )


def test_ray_job_submit_trains_gsasrec_and_fails_cleanly(ray_head, tmp_path):
    lake = write_lake(tmp_path / "lake")
    common = (
        f"lake.root={lake}", "dataset.name=walks", f"mlflow.local_dir={tmp_path / 'mlflow'}",
        f"train.storage_path={tmp_path / 'ray'}", "model.embedding_dim=16", "model.ffn_dim=16",
        "model.num_blocks=1", "model.max_len=12", "model.batch_size=32", "model.negatives=8",
        "model.gbce_alpha=null", "model.max_epochs=2", "train.workers=2", "train.cpus_per_worker=0.5",
        "runtime.log_level=WARNING",
    )
    done = _submit(ray_head, *common)
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

    failed = _submit(ray_head, *common, "dataset.name=absent")
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert "no sequences" in output and "run `musicrec preprocess` for dataset absent first" in output
