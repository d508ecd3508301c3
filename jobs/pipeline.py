"""The whole flow locally: generate (if absent) -> ingest -> preprocess -> evaluate -> grid -> report.

python jobs/pipeline.py --config conf/experiments/demo.yaml [key=value ...]

Same arguments as `musicrec pipeline` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("pipeline"))
