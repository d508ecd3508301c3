"""Evaluate the simple scorers on every task and protocol; log to MLflow.

    ray job submit -- python jobs/evaluate.py --config conf/cluster.yaml --config conf/datasets/... [key=value ...]
    python jobs/evaluate.py --config conf/experiments/demo.yaml
"""

from musicrec.entry import job_main
from musicrec.evaluate.job import run_evaluate

if __name__ == "__main__":
    raise SystemExit(
        job_main("evaluate", run_evaluate, needs_spark=False, description="Evaluate scorers on the lake's examples.")
    )
