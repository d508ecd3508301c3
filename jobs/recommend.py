"""Batch recommendations: a model's top-K per holdout user and task, through its faiss index and the
task's candidate filter, into the lake's `recommendations` table.

spark-submit jobs/recommend.py --config conf/cluster.yaml --config conf/datasets/... \
    recommend.model=models:/yambda-50m.T1.gsasrec@champion
python jobs/recommend.py --config conf/experiments/demo.yaml recommend.model=<training run id>

Same arguments as `musicrec recommend` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("recommend"))
