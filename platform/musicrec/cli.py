"""The ``musicrec`` command: one verb per stage of the data flow (spec platform.md, "Entry points").

Every verb takes ``--config FILE`` (repeatable) and dotted ``key=value`` overrides, validates the
merged config before doing any work, and logs the resolved config. Heavy libraries are imported
only by the verb that needs them, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from musicrec.config import ConfigError, to_yaml
from musicrec.contract import PROTOCOL_KINDS
from musicrec.entry import add_config_args, config_from_args, run_job

# Verbs of the spec that later work will build; they fail clearly instead of pretending.
PLANNED = {
    "tune": "Ray Tune sweeps",
    "recommend": "batch recommendations",
    "report": "experiment reports",
}


def _generate(config) -> dict[str, Any]:
    from musicrec.pipeline import run_generate

    return run_generate(config)


def _ingest(config, spark) -> dict[str, Any]:
    from musicrec.data.ingest import run_ingest

    return run_ingest(config, spark)


def _preprocess(config, spark) -> dict[str, Any]:
    from musicrec.prep.job import run_preprocess

    return run_preprocess(config, spark)


def _evaluate(config) -> dict[str, Any]:
    from musicrec.evaluate.job import run_evaluate

    return run_evaluate(config)


def _train(config) -> dict[str, Any]:
    from musicrec.train.job import run_train

    return run_train(config)


def _pipeline(config) -> dict[str, Any]:
    from musicrec.pipeline import run_pipeline

    return run_pipeline(config)


def _vacuum(config, spark) -> dict[str, Any]:
    from musicrec.lake.vacuum import run_vacuum

    return run_vacuum(config, spark)


def _score(config, args) -> dict[str, Any]:
    from musicrec.evaluate.job import run_score

    return run_score(config, args)


def _bench(config, args) -> dict[str, Any]:
    from musicrec.bench.run import run_bench

    return run_bench(config, args.name, args.sizes)


# verb -> (help, function, needs_spark, takes_args)
VERBS: dict[str, tuple[str, Callable[..., dict[str, Any]], bool, bool]] = {
    "generate": ("write a synthetic dataset in the Yambda layout", _generate, False, False),
    "ingest": ("validate Yambda files and write events/quarantine/stats (Spark)", _ingest, True, False),
    "preprocess": ("filters, task sequences, holdout and temporal splits (Spark)", _preprocess, True, False),
    "train": ("train model.family on train.sequence (one Ray task; MLflow run with the model)", _train, False, False),
    "evaluate": ("evaluate scorers, or a trained model (evaluate.model_uri), on every task", _evaluate, False, False),
    "pipeline": ("generate -> ingest -> preprocess -> evaluate, locally", _pipeline, False, False),
    "score": ("score external predictions on the platform's protocols", _score, False, True),
    "vacuum": ("delete Delta files no version inside vacuum.retention_hours needs", _vacuum, True, False),
    "bench": ("run a benchmark (spec/performance.md) and log it to MLflow", _bench, False, True),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicrec",
        description="Music recommendation platform: Spark + Delta Lake data jobs, Ray training, MLflow tracking.",
        epilog="Example: musicrec pipeline --config conf/experiments/demo.yaml seed=7",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (help_text, *_rest) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        add_config_args(p)
        if verb == "generate":
            p.add_argument("--preset", choices=["tiny", "small", "medium", "yambda-50m"], help="generator preset")
            p.add_argument("--seed", type=int, help="generator seed (default: the config's seed)")
            p.add_argument("--out", help="Yambda-layout root to write (default: data.root)")
        elif verb == "score":
            p.add_argument("--predictions", required=True, help="parquet with uid, task, items (best first)")
            p.add_argument("--examples", choices=PROTOCOL_KINDS, required=True)
            p.add_argument("--lake", help="lake root (default: lake.root)")
            p.add_argument("--dataset", help="dataset name (default: dataset.name)")
            p.add_argument("--split", default="test", help="holdout split or GTS window (default test)")
            p.add_argument("--feedback", default="listen_plus", help="GTS feedback (default listen_plus)")
            p.add_argument("--k", default="10,100", help="comma-separated cut-offs (default 10,100)")
            p.add_argument("--out", help="write the metrics as JSON here")
        elif verb == "bench":
            p.add_argument("name", choices=["generate", "preprocess", "evaluate", "als"], help="which benchmark")
            p.add_argument("--sizes", default="", help="comma-separated sizes (benchmark-specific)")
    for verb, help_text in PLANNED.items():
        p = sub.add_parser(verb, help=f"{help_text} (not built yet)", description=f"{help_text}: not built yet")
        add_config_args(p)
    config = sub.add_parser("config", help="show the resolved config", description="show the resolved config")
    config_sub = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_config_args(config_sub.add_parser("show", help="print the merged, validated config as YAML"))
    return parser


def _cli_overrides(args: argparse.Namespace) -> list[str]:
    """Verb flags are shorthands for config keys, applied after the files and overrides."""
    extra: list[str] = []
    if getattr(args, "preset", None):
        extra.append(f"generate.preset={args.preset}")
    if getattr(args, "seed", None) is not None:
        extra.append(f"seed={args.seed}")
    if args.verb == "generate" and args.out:
        extra.append(f"data.root={args.out}")
    if args.verb == "score":
        if args.lake:
            extra.append(f"lake.root={args.lake}")
        if args.dataset:
            extra.append(f"dataset.name={args.dataset}")
    return extra


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # argparse binds every positional at the first run of them, so in `bench generate --config F k=v`
    # the overrides after the option are left over: they are still overrides; anything else is an error.
    args, rest = parser.parse_known_args(argv)
    stray = [a for a in rest if a.startswith("-") or "=" not in a]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *rest]
    if args.verb in PLANNED:
        print(f"musicrec {args.verb}: {PLANNED[args.verb]} is not built yet", file=sys.stderr)
        return 3
    args.overrides = [*args.overrides, *_cli_overrides(args)]
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"musicrec {args.verb}: {e}", file=sys.stderr)
        return 2
    if args.verb == "config":
        print(to_yaml(config), end="")
        return 0
    _help, fn, needs_spark, takes_args = VERBS[args.verb]
    if takes_args:
        return run_job(args.verb, lambda cfg: fn(cfg, args), config, needs_spark=False)
    return run_job(args.verb, fn, config, needs_spark=needs_spark)


if __name__ == "__main__":
    raise SystemExit(main())
