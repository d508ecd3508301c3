"""The whole flow locally: generate (if absent) -> ingest -> preprocess -> evaluate.

    python jobs/pipeline.py --config conf/experiments/demo.yaml [key=value ...]
"""

from musicrec.entry import job_main
from musicrec.pipeline import run_pipeline

if __name__ == "__main__":
    raise SystemExit(
        job_main("pipeline", run_pipeline, needs_spark=False, description="Run the whole local flow.")
    )
