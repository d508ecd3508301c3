"""Train one model family on one training sequence of the lake; log config, lineage, metrics and the model to MLflow.

    ray job submit --address http://HEAD:8265 -- python jobs/train.py --config conf/cluster.yaml \
        --config conf/models/gsasrec.yaml train.sequence=disc_track train.workers=4 train.use_gpu=true
    python jobs/train.py --config conf/local.yaml --config conf/models/gsasrec.yaml
"""

from musicrec.entry import job_main

from musicrec.train.sequential import run_sequential_train

if __name__ == "__main__":
    raise SystemExit(
        job_main("train", run_sequential_train, needs_spark=False, description="Train a model on the lake's sequences.")
    )
