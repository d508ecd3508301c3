"""The cluster path as users take it (README, "A local cluster"): ``infra/local/cluster.sh up`` (what
``make cluster-up`` runs) on free ports; ``spark-submit`` of the ingest and preprocess jobs and two
concurrent ``ray job submit``s of training, each with the package shipped as the README says (the
cluster's nodes have the dependencies but not ``musicrec``); the runs found through the MLflow server's
REST API; ``down``. While it runs, every listening socket of the cluster's processes and of the Spark
drivers is watched: all must be on 127.0.0.1. Afterwards none of them may be left."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from musicrec.cli import main
from ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.0.0.1", "[::ffff:127.0.0.1]")
DATASET = ("--config", "conf/cluster.yaml", "--config", "conf/datasets/synthetic-tiny.yaml")


def processes() -> list[tuple[int, int, int, str]]:
    """``ps``: (pid, parent pid, session id, state) of every process."""
    listed = subprocess.run(
        ["ps", "-eo", "pid=,ppid=,sid=,stat="], capture_output=True, text=True, check=True
    )
    return [
        (int(pid), int(ppid), int(sid), stat)
        for pid, ppid, sid, stat in map(str.split, listed.stdout.splitlines())
    ]


def session_members(sessions: list[int], table: list[tuple[int, int, int, str]] | None = None) -> set[int]:
    """Live (non-zombie) processes of these sessions and their descendants (Ray starts each job's
    driver in a session of its own)."""
    table = processes() if table is None else table
    keep = {pid for pid, _, sid, _ in table if sid in sessions}
    grew = True
    while grew:
        grown = keep | {pid for pid, ppid, _, _ in table if ppid in keep}
        grew, keep = grown != keep, grown
    return keep - {pid for pid, _, _, stat in table if stat.startswith("Z")}


def pid_in_use(pid: int) -> bool:
    """A live process (not a zombie waiting for its parent) has this pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def listening() -> list[tuple[str, int, set[int]]]:
    """``ss -ltnp``: (local address, port, pids) of every listening TCP socket."""
    out = []
    for line in subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        fields = line.split()
        address, port = fields[3].rsplit(":", 1)
        out.append((address, int(port), {int(p) for p in re.findall(r"pid=(\d+)", line)}))
    return out


class SocketWatch:
    """Samples, once a second, the listening sockets of the processes of some sessions (the cluster's
    services and the jobs' drivers, with every process they start: executors, Ray workers, ...)."""

    def __init__(self) -> None:
        self.sessions: dict[int, str] = {}
        self.seen: dict[tuple[str, int], str] = {}  # (address, port) -> session name
        self.pids: set[int] = set()  # every process of the sessions, ever
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, session: int, name: str) -> None:
        self.sessions[session] = name

    def sample(self) -> None:
        owner, table = {}, processes()
        for session, name in list(self.sessions.items()):
            owner |= dict.fromkeys(session_members([session], table), name)
        self.pids |= owner.keys()
        for address, port, pids in listening():
            for pid in pids & owner.keys():
                self.seen[address, port] = owner[pid]

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def __enter__(self) -> SocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_in_session(
    watch: SocketWatch, name: str, command: list[str], env: dict[str, str]
) -> subprocess.Popen:
    """Run ``command`` from the repository in a session of its own, watched while it runs."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    watch.watch(process.pid, name)
    return process


def finish(process: subprocess.Popen, timeout: int) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out


def mlflow_api(base: str, path: str, body: dict | None = None) -> dict:
    if body is None:
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}")
    else:
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def read_env(path: Path) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines())


def test_local_cluster_runs_the_users_path_on_loopback_and_leaves_nothing(tmp_path):
    # Short: Ray's and PostgreSQL's socket paths must fit in 107 bytes; tmp_path's parents are private
    # to this user, and PostgreSQL runs as its own user when the tests run as root.
    state = Path(tempfile.mkdtemp(prefix="mrc"))
    ports = {
        k: str(free_port()) for k in ("SPARK_PORT", "SPARK_UI_PORT", "RAY_DASHBOARD_PORT", "MLFLOW_PORT")
    }
    # Nothing of this process reaches the jobs: musicrec must come with them, not from PYTHONPATH.
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    script = [str(REPO / "infra" / "local" / "cluster.sh")]
    cluster_env = {**base_env, "CLUSTER_DIR": str(state), **ports}
    subprocess.run(["make", "-s", "dist"], cwd=REPO, env=base_env, check=True)
    up = subprocess.Popen([*script, "up"], cwd=REPO, env=cluster_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)  # fmt: skip
    data, lake = tmp_path / "data", tmp_path / "lake"
    common = (f"data.root={data}", f"lake.root={lake}")
    pids: dict[str, str] = {}
    try:
        # The data is generated while the cluster starts.
        assert main(["generate", "--config", str(REPO / DATASET[3]), "--out", str(data),
                     f"mlflow.local_dir={tmp_path / 'mlflow'}"]) == 0  # fmt: skip
        up_out = finish(up, 480)
        assert up.returncode == 0, up_out
        pids = dict(line.split() for line in (state / "pids").read_text().splitlines())
        assert set(pids) == {"ray", "spark-master", "spark-worker", "postgres", "mlflow"}
        env = {**base_env, **read_env(state / "env")}
        assert env["PYSPARK_PYTHON"] == str(state / "python" / "bin" / "python")

        with SocketWatch() as watch:
            for name, pid in pids.items():
                watch.watch(int(pid), name)
            for job in ("ingest", "preprocess"):
                submitted = run_in_session(watch, f"{job} driver", [
                    str(Path(sys.executable).parent / "spark-submit"), "--master", env["SPARK_MASTER"],
                    "--py-files", "dist/musicrec.zip", f"jobs/{job}.py", *DATASET, *common], env)  # fmt: skip
                out = finish(submitted, 420)
                assert submitted.returncode == 0, out[-4000:]
                assert f"musicrec: {job} finished" in out

            runtime_env = json.dumps({"py_modules": ["platform/musicrec"],
                                      "env_vars": {"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}})  # fmt: skip
            # Two training jobs at once: both log to the PostgreSQL-backed server together.
            jobs = [run_in_session(watch, f"train {seed}", [
                str(Path(sys.executable).parent / "ray"), "job", "submit", "--working-dir", ".",
                "--runtime-env-json", runtime_env, "--", "python", "jobs/train.py", *DATASET,
                "--config", "conf/models/als.yaml", *common, "model.factors=8", "model.iterations=3",
                f"seed={seed}", f"train.register={str(seed == 1).lower()}"], env) for seed in (1, 2)]  # fmt: skip
            outs = [finish(job, 420) for job in jobs]
            watch.sample()
        for job, out in zip(jobs, outs, strict=True):
            assert job.returncode == 0, out[-4000:]
            # The job's own output, streamed back by `ray job submit`.
            assert "musicrec: train finished" in out and "succeeded" in out

        # Every run, found through the server's REST API, with its metrics.
        url = env["MLFLOW_TRACKING_URI"]
        query = urllib.parse.urlencode({"experiment_name": "synthetic-tiny/default"})
        experiment = mlflow_api(url, f"experiments/get-by-name?{query}")["experiment"]["experiment_id"]
        runs = mlflow_api(url, "runs/search", {"experiment_ids": [experiment], "max_results": 100})["runs"]
        assert all(run["info"]["status"] == "FINISHED" for run in runs)
        names = sorted(run["info"]["run_name"] for run in runs)
        assert {"ingest", "preprocess"} <= set(names)
        trained = [run for run in runs if {"key": "family", "value": "als"} in run["data"].get("params", [])]
        assert len(trained) == 2
        for run in trained:
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert any(k.startswith("val/") for k in metrics) and any(k.startswith("test/") for k in metrics)
            assert all(0 <= v <= 1 for k, v in metrics.items() if "ndcg" in k)
        # The first job registered its model: found through the registry's REST API, with its pyfunc.
        first = next(run["info"]["run_id"] for run in trained
                     if {"key": "seed", "value": "1"} in run["data"].get("tags", []))  # fmt: skip
        query = urllib.parse.urlencode({"filter": f"run_id='{first}'"})
        versions = mlflow_api(url, f"model-versions/search?{query}")["model_versions"]
        assert versions and {v["name"].split(".")[-1] for v in versions} == {"als"}
        for version in versions:
            tags = {t["key"]: t["value"] for t in version.get("tags", [])}
            assert tags["training_run"] == first and version["status"] == "READY"
            query = urllib.parse.urlencode({"name": version["name"]})
            model = mlflow_api(url, f"registered-models/get?{query}")["registered_model"]
            assert model["latest_versions"][0]["version"] == version["version"]
        other = mlflow_api(url, "model-versions/search?" + urllib.parse.urlencode(
            {"filter": f"run_id='{next(r['info']['run_id'] for r in trained if r['info']['run_id'] != first)}'"}))
        assert not other.get("model_versions")  # the second job was not asked to register
        assert "Traceback" not in (state / "logs" / "mlflow.log").read_text()
        # Artifacts went through the server into the cluster's artifact folder.
        for run in trained:
            info = run["info"]
            assert (
                state / "mlartifacts" / experiment / info["run_id"] / "artifacts" / "model" / "model.json"
            ).is_file()

        # Adaptive execution: the tiny jobs ran a few tasks per stage, not 2,000.
        apps = sorted((state / "spark-work").glob("app-*"))
        assert len(apps) == 2
        for app in apps:
            tasks = sum(log.read_text().count("Running task") for log in app.glob("*/stderr"))
            assert 0 < tasks < 200, (app, tasks)
    finally:
        down = subprocess.run(
            [*script, "down"], cwd=REPO, env=cluster_env, capture_output=True, text=True, timeout=180
        )
        left = session_members([int(pid) for pid in pids.values()])
        shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not left, f"processes of the cluster left: {left}"

    # Every socket that any of them listened on was on 127.0.0.1, and none is left open.
    off_loopback = {key: who for key, who in watch.seen.items() if key[0] not in LOOPBACK}
    assert not off_loopback, off_loopback
    owners = set(watch.seen.values())
    assert {
        "ray",
        "spark-master",
        "spark-worker",
        "postgres",
        "mlflow",
        "ingest driver",
        "preprocess driver",
    } <= owners
    # Nor any process that ever belonged to them (one that left its session included).
    assert not [pid for pid in watch.pids if pid_in_use(pid)]
