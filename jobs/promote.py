"""Move the champion alias of <dataset>.<task>.<family> to its best version by a validation metric.

python jobs/promote.py --config conf/experiments/demo.yaml promote.task=T1 promote.family=als [promote.force=true]

Same arguments as `musicrec promote` (see `--help`).
"""

from musicrec.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("promote"))
