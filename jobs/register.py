"""Register a training run's model as <dataset>.<task>.<family> (idempotent per run).

python jobs/register.py --config conf/experiments/demo.yaml register.run_id=RUN_ID [register.tasks=[T1]]

Same arguments as `musicrec register` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("register"))
