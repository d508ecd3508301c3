#!/usr/bin/env bash
# Submit a musicrec Spark job to Kubernetes. Usage:
#   IMAGE=registry/musicrec:TAG K8S=https://api.example:6443 infra/spark/submit-k8s.sh preprocess \
#       --config conf/cluster.yaml --config conf/datasets/yambda-5b.yaml lake.root=s3a://bucket/lake data.root=s3a://bucket/yambda
set -euo pipefail
job=$1; shift
exec spark-submit \
  --master "k8s://${K8S:?set K8S to the Kubernetes API URL}" \
  --deploy-mode cluster \
  --name "musicrec-${job}" \
  --conf spark.kubernetes.container.image="${IMAGE:?set IMAGE}" \
  --conf spark.executor.instances="${EXECUTORS:-16}" \
  --conf spark.executor.cores="${EXECUTOR_CORES:-4}" \
  --conf spark.executor.memory="${EXECUTOR_MEMORY:-16g}" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  "local:///opt/musicrec/jobs/${job}.py" "$@"
