"""Evaluate the simple scorers on every task and protocol; log to MLflow.

ray job submit -- python jobs/evaluate.py --config conf/cluster.yaml --config conf/datasets/... [key=value ...]
python jobs/evaluate.py --config conf/experiments/demo.yaml

Same arguments as `musicrec evaluate` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("evaluate"))
