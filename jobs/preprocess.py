"""Preprocess the lake's ``events``: ``sequences``, ``user_splits``, ``holdout_examples``, ``gts_examples`` and
the preprocess rows of ``stats``.

spark-submit jobs/preprocess.py --config conf/local.yaml --config conf/datasets/synthetic-small.yaml [key=value ...]
"""

from musicrec.entry import job_main
from musicrec.prep.job import run_preprocess

if __name__ == "__main__":
    raise SystemExit(
        job_main(
            "preprocess",
            run_preprocess,
            needs_spark=True,
            description="Filter listens, derive task sequences, the user holdout and the global temporal split.",
        )
    )
