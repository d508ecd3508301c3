"""A local ``mlflow server`` on 127.0.0.1 over the profile's SQLite store, for concurrent writers.

SQLite takes one writer at a time: processes that log at once (Tune trials, workers reporting)
write through one server instead, which alone touches the database. :func:`local_server` starts it
over the same store and artifact folder as the local profile (so a run logged either way is in one
place), waits until it answers, yields its URI and stops its whole process group afterwards. The
cluster profile has its own server (``MLFLOW_TRACKING_URI``) and starts none.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from musicrec.config import Config
from musicrec.errors import ConfigError
from musicrec.runtime.mlflow_setup import tracking_uri

log = logging.getLogger(__name__)
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_command(config: Config, port: int) -> list[str]:
    store = tracking_uri(config)
    if not store.startswith("sqlite:"):
        raise ConfigError(f"a local MLflow server serves the local SQLite store, not {store}")
    artifacts = (Path(config.mlflow.local_dir).resolve() / "artifacts").as_uri()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", HOST, "--port", str(port), "--workers", "1",
        "--backend-store-uri", store,
        # Experiments the server creates keep their artifacts where the local profile puts them.
        "--artifacts-destination", artifacts,
    ]  # fmt: skip


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {url} did not answer within {timeout:.0f} s")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the server's process group (the CLI and its uvicorn worker), SIGKILL to what is left
    after ``timeout``; returns once every process of the group is gone."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        process.poll()  # reap the leader: a zombie would keep the group "alive"
        if not _group_alive(process.pid):
            break
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            deadline = math.inf
        time.sleep(0.2)
    process.wait()


@contextmanager
def local_server(config: Config, port: int | None = None, timeout: float = 120) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of an ``mlflow server`` over the local store, stopped on exit."""
    port = port or free_port()
    Path(config.mlflow.local_dir).mkdir(parents=True, exist_ok=True)
    log_file = Path(config.mlflow.local_dir) / "server.log"
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            server_command(config, port), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://{HOST}:{port}"
    try:
        _wait_healthy(url, process, timeout)
        log.info("mlflow server at %s (pid %d, log %s)", url, process.pid, log_file)
        yield url
    finally:
        _stop(process)
