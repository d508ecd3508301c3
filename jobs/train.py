"""Train one model family on one training sequence of the lake; log config, lineage, metrics and the model to MLflow.

    ray job submit -- python jobs/train.py --config conf/cluster.yaml --config conf/models/als.yaml [key=value ...]
    python jobs/train.py --config conf/experiments/demo.yaml --config conf/models/als.yaml train.sequence=disc_track
"""

from musicrec.entry import job_main
from musicrec.train.job import run_train

if __name__ == "__main__":
    raise SystemExit(job_main("train", run_train, needs_spark=False, description="Train a model on the lake's sequences."))
