"""Ingest a Yambda-layout dataset into the lake: ``events``, ``quarantine`` and the ingest rows of ``stats``.

spark-submit jobs/ingest.py --config conf/local.yaml --config conf/datasets/synthetic-tiny.yaml [key=value ...]
"""

from musicrec.data.ingest import run_ingest
from musicrec.entry import job_main

if __name__ == "__main__":
    raise SystemExit(
        job_main(
            "ingest",
            run_ingest,
            needs_spark=True,
            description="Validate Yambda files (data.root, data.size) and write events, quarantine and stats.",
        )
    )
