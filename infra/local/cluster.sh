#!/usr/bin/env bash
# A local multi-process "cluster" on 127.0.0.1: Spark standalone master + worker, a Ray head with
# token authentication, and an MLflow server. Usage: infra/local/cluster.sh start|stop|status
# Then: spark-submit --master spark://127.0.0.1:7077 jobs/...;  RAY_ADDRESS=http://127.0.0.1:8265
#       RAY_AUTH_MODE=token ray job submit -- python jobs/...;  MLFLOW_TRACKING_URI=http://127.0.0.1:5000
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/.venv/bin
state=$root/.local-cluster
spark_class=$($bin/python -c "import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), 'bin', 'spark-class'))")
export RAY_AUTH_MODE=token

start() {
  mkdir -p "$state"
  nohup "$spark_class" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port 7077 --webui-port 8080 \
    >"$state/spark-master.log" 2>&1 & echo $! >"$state/spark-master.pid"
  nohup "$spark_class" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores "${WORKER_CORES:-2}" \
    --memory "${WORKER_MEMORY:-4g}" --webui-port 8081 spark://127.0.0.1:7077 \
    >"$state/spark-worker.log" 2>&1 & echo $! >"$state/spark-worker.pid"
  [ -s "$HOME/.ray/auth_token" ] || "$bin/ray" get-auth-token --generate >/dev/null
  "$bin/ray" start --head --node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1 --port 6379 >"$state/ray.log" 2>&1
  nohup "$bin/mlflow" server --host 127.0.0.1 --port 5000 --backend-store-uri "sqlite:///$state/mlflow.db" \
    --artifacts-destination "$state/mlartifacts" >"$state/mlflow.log" 2>&1 & echo $! >"$state/mlflow.pid"
  echo "started: spark://127.0.0.1:7077, Ray http://127.0.0.1:8265 (token in ~/.ray/auth_token), MLflow http://127.0.0.1:5000"
}

stop() {
  "$bin/ray" stop --force >/dev/null 2>&1 || true
  for p in spark-worker spark-master mlflow; do
    [ -f "$state/$p.pid" ] && kill "$(cat "$state/$p.pid")" 2>/dev/null || true
    rm -f "$state/$p.pid"
  done
  echo stopped
}

status() {
  for p in spark-master spark-worker mlflow; do
    if [ -f "$state/$p.pid" ] && kill -0 "$(cat "$state/$p.pid")" 2>/dev/null; then echo "$p: running"; else echo "$p: stopped"; fi
  done
  "$bin/ray" status >/dev/null 2>&1 && echo "ray: running" || echo "ray: stopped"
}

case "${1:-}" in start) start ;; stop) stop ;; status) status ;; *) echo "usage: $0 start|stop|status" >&2; exit 2 ;; esac
