"""What every job entry point and CLI verb shares: parse ``--config`` files and ``key=value``
overrides, validate before any work, log the resolved config, build the engines, run, and turn
user errors into one clear message and a non-zero exit code."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from musicrec.config import Config, ConfigError, load_config, to_yaml
from musicrec.errors import InputError
from musicrec.runtime.logs import setup_logging

log = logging.getLogger("musicrec")

JobFn = Callable[..., dict[str, Any]]


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config (repeatable; later files override earlier ones), e.g. conf/local.yaml",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. seed=7")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def run_job(verb: str, fn: JobFn, config: Config, *, needs_spark: bool) -> int:
    """Run ``fn(config[, spark])``; print its summary; map user errors to exit code 1."""
    setup_logging(config.runtime.log_level)
    log.info("%s: resolved config\n%s", verb, to_yaml(config))
    started = time.perf_counter()
    try:
        if needs_spark:
            from musicrec.runtime.spark import get_spark

            summary = fn(config, get_spark(config, app_name=f"musicrec-{verb}"))
        else:
            summary = fn(config)
    except (InputError, ConfigError) as e:
        print(f"musicrec {verb}: error: {e}", file=sys.stderr)
        return 1
    log.info("%s finished in %.1f s", verb, time.perf_counter() - started)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def job_main(verb: str, fn: JobFn, *, needs_spark: bool, description: str, argv: Sequence[str] | None = None) -> int:
    """The whole of a ``jobs/<verb>.py`` entry point."""
    parser = argparse.ArgumentParser(prog=f"{verb}.py", description=description)
    add_config_args(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"{verb}: {e}", file=sys.stderr)
        return 2
    return run_job(verb, fn, config, needs_spark=needs_spark)
