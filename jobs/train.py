"""Train one model family (model.family) on one training sequence of the lake: classic families as one Ray task,
sequential ones under Ray Train; log config, lineage, metrics and the model to MLflow.

ray job submit --address http://HEAD:8265 -- python jobs/train.py --config conf/cluster.yaml \
    --config conf/models/gsasrec.yaml train.sequence=disc_track train.workers=4 train.use_gpu=true
python jobs/train.py --config conf/experiments/demo.yaml --config conf/models/als.yaml train.sequence=disc_track

Same arguments as `musicrec train` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("train"))
