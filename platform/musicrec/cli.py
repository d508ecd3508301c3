"""The ``musicrec`` command and the ``jobs/<verb>.py`` entry points: one parser per verb, built from
the registry (:mod:`musicrec.verbs`), for both.

Every verb takes ``--config FILE`` (repeatable; later files win) and dotted ``key=value``
overrides anywhere on the line, then its own flags, which are shorthands for config keys and win
over both. The merged config is validated before any work. The console shows progress, the
summary and where the outputs are; the resolved config is logged at DEBUG and saved with the run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from musicrec.config import Config, load_config, to_yaml
from musicrec.errors import ConfigError, MusicrecError
from musicrec.verbs import PLANNED, REGISTRY, VERBS, Verb

__all__ = ["PLANNED", "VERBS", "job_main", "main"]

log = logging.getLogger("musicrec")
EPILOG = "Example: musicrec pipeline --config conf/experiments/demo.yaml seed=7"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config (repeatable; later files override earlier ones), e.g. conf/local.yaml",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. seed=7")


def verb_parser(verb: Verb) -> argparse.ArgumentParser:
    """The one parser of ``musicrec <verb>`` and ``jobs/<verb>.py``."""
    parser = argparse.ArgumentParser(prog=f"musicrec {verb.name}", description=verb.help, epilog=EPILOG)
    for flag in verb.flags:
        parser.add_argument(flag.name, choices=flag.choices, help=flag.help)
    _add_config_args(parser)
    return parser


def _config_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicrec config", description="show the resolved config")
    parser.add_argument("action", choices=["show"], help="print the merged, validated config as YAML")
    _add_config_args(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the verbs; each verb's arguments are parsed by :func:`verb_parser`."""
    parser = argparse.ArgumentParser(
        prog="musicrec",
        description="Music recommendation platform: Spark + Delta Lake data jobs, Ray training, MLflow tracking.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in REGISTRY.values():
        sub.add_parser(verb.name, help=verb.help if verb.built else f"{verb.help} (not built yet)")
    sub.add_parser("config", help="show the resolved config")
    return parser


def _flag_settings(verb: Verb, args: argparse.Namespace) -> list[tuple[str, Any, str]]:
    out = []
    for flag in verb.flags:
        text = getattr(args, flag.name.lstrip("-").replace("-", "_"))
        if text is None:
            continue
        try:
            value = flag.parse(text)
        except MusicrecError:
            raise
        except ValueError:
            raise ConfigError(f"{flag.name}: not a valid value: {text!r}") from None
        out += [(key, value, flag.name) for key in flag.keys]
    return out


def _parse(parser: argparse.ArgumentParser, verb: Verb | None, argv: Sequence[str]) -> Config:
    # Intermixed: overrides may follow any option (`--config A k=v --config B k=v`).
    args = parser.parse_intermixed_args(argv)
    return load_config(args.config, args.overrides, _flag_settings(verb, args) if verb else ())


def run(verb_name: str, argv: Sequence[str]) -> int:
    """Parse ``argv`` for one verb, run it, print its summary; user errors become one line and an exit code."""
    verb = REGISTRY[verb_name]
    try:
        config = _parse(verb_parser(verb), verb, argv)
        # Imported first: MLflow configures its loggers on import, and ours must have the last word.
        from musicrec.runner import run_verb
        from musicrec.runtime.hugepages import apply_numpy_hugepages
        from musicrec.runtime.logs import setup_logging

        setup_logging(config.runtime.log_level)
        apply_numpy_hugepages(config.runtime.numpy_hugepages)
        log.debug("%s: resolved config\n%s", verb_name, to_yaml(config))
        summary = run_verb(verb_name, config)
    except MusicrecError as e:
        print(f"musicrec {verb_name}: error: {e}", file=sys.stderr)
        return e.exit_code
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "config":
        try:
            print(to_yaml(_parse(_config_parser(), None, argv[1:])), end="")
        except ConfigError as e:
            print(f"musicrec config: error: {e}", file=sys.stderr)
            return e.exit_code
        return 0
    if not argv or argv[0] not in REGISTRY:
        build_parser().parse_args(argv[:1])  # prints the help, or names the missing or unknown verb; exits
    return run(argv[0], argv[1:])


def job_main(verb: str) -> int:
    """The whole of ``jobs/<verb>.py``: the same parser and runner as ``musicrec <verb>``."""
    return run(verb, sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
