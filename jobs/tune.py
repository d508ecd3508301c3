"""Sweep one model family over the config's `tune.space` with Ray Tune (Optuna search, ASHA early
stopping on validation NDCG@100); every trial a child MLflow run; the best registered once.

ray job submit --address http://HEAD:8265 -- python jobs/tune.py --config conf/cluster.yaml \
    --config conf/tune/gsasrec.yaml train.sequence=disc_track train.use_gpu=true
python jobs/tune.py --config conf/experiments/demo.yaml --config conf/tune/als.yaml train.sequence=disc_track

Same arguments as `musicrec tune` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("tune"))
