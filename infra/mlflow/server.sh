#!/usr/bin/env bash
# MLflow tracking + registry server with a SQL backend and object-store artifacts.
#   MLFLOW_DB=postgresql://user:pass@db/mlflow MLFLOW_ARTIFACTS=s3://bucket/mlflow infra/mlflow/server.sh
set -euo pipefail
exec mlflow server \
  --backend-store-uri "${MLFLOW_DB:?set MLFLOW_DB}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS:?set MLFLOW_ARTIFACTS}" \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}"
