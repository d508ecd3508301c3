"""Ingest a Yambda-layout dataset into the lake: ``events``, ``quarantine`` and the ingest rows of ``stats``.

spark-submit jobs/ingest.py --config conf/local.yaml --config conf/datasets/synthetic-tiny.yaml [key=value ...]

Same arguments as `musicrec ingest` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("ingest"))
