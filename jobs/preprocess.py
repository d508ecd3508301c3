"""Preprocess the lake's ``events``: ``sequences``, ``user_splits``, ``holdout_examples``, ``gts_examples`` and
the preprocess rows of ``stats``.

spark-submit jobs/preprocess.py --config conf/local.yaml --config conf/datasets/synthetic-small.yaml [key=value ...]

Same arguments as `musicrec preprocess` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("preprocess"))
