"""The verbs of ``musicrec <verb>`` and ``jobs/<verb>.py``, declared once.

A verb is one :class:`Verb` entry here plus one library function ``run(config)`` (or
``run(config, spark)`` for a Spark verb) that returns a summary. Its flags are shorthands for
config keys, so the library only ever sees the validated config. The runner
(:mod:`musicrec.runner`) gives every verb the same shape: check inputs, one MLflow run with
the resolved config, git commit and Delta lineage, then the summary.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from musicrec.config import Config
from musicrec.contract import FEEDBACKS, PROTOCOL_KINDS, WINDOWS
from musicrec.errors import InputError


@dataclass(frozen=True)
class Flag:
    """A command-line shorthand that sets config keys (after files and overrides, so it wins)."""

    name: str  # "--preset", or a positional such as "name"
    keys: tuple[str, ...]
    help: str
    choices: tuple[str, ...] | None = None
    # Turns the flag's text into the key's value; a ValueError is a usage error naming the flag.
    parse: Callable[[str], Any] = str


@dataclass(frozen=True)
class Verb:
    name: str
    help: str
    run: str = ""  # "module:function"; empty for a verb of the spec that is not built yet
    spark: bool = False  # the function takes (config, spark)
    # Lake tables the verb reads (checked to exist before its run opens) and writes (logged as outputs).
    reads: tuple[str, ...] | Callable[[Config], tuple[str, ...]] = ()
    writes: tuple[str, ...] = ()
    flags: tuple[Flag, ...] = ()
    check: str = ""  # "module:function" taking the same arguments as run: checks inputs before the run opens
    experiment: str = ""  # an MLflow experiment shared by every dataset; empty: <dataset.name>/<mlflow.experiment>

    @property
    def built(self) -> bool:
        return bool(self.run)

    def function(self) -> Callable[..., dict[str, Any]]:
        return _resolve(self.run)

    def checker(self) -> Callable[..., None] | None:
        return _resolve(self.check) if self.check else None

    def tables_read(self, config: Config) -> tuple[str, ...]:
        return self.reads(config) if callable(self.reads) else self.reads


def _resolve(target: str) -> Callable[..., Any]:
    # Imported only when the verb runs, so `--help` stays instant and a verb loads only its engines.
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",")]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise InputError(f"--k must be comma-separated positive integers (e.g. 10,100), got {text!r}")
    return ks


PRESETS = ("tiny", "small", "medium", "yambda-50m")
_REGISTRY: tuple[Verb, ...] = (
    Verb(
        "generate",
        "write a synthetic dataset in the Yambda layout (data.root/flat/data.size)",
        "musicrec.pipeline:run_generate",
        flags=(
            Flag(
                "--preset",
                ("generate.preset", "data.size"),
                "generator preset; also the folder written (sets generate.preset and data.size)",
                PRESETS,
            ),
            Flag("--seed", ("seed",), "generator seed (sets seed)", parse=int),
            Flag("--out", ("data.root",), "Yambda-layout root to write (sets data.root)"),
        ),
    ),
    Verb(
        "ingest",
        "validate Yambda files and write events/quarantine/stats (Spark)",
        "musicrec.data.ingest:run_ingest",
        spark=True,
        writes=("events", "quarantine", "stats"),
        check="musicrec.data.ingest:check_input",
    ),
    Verb(
        "preprocess",
        "filters, task sequences, holdout and temporal splits (Spark)",
        "musicrec.prep.job:run_preprocess",
        spark=True,
        reads=("events",),
        writes=("sequences", "user_splits", "holdout_examples", "gts_examples", "stats"),
    ),
    Verb(
        "evaluate",
        "evaluate the simple scorers on every task and protocol",
        "musicrec.evaluate.job:run_evaluate",
        reads=lambda config: ("sequences", *(f"{kind}_examples" for kind in config.evaluate.protocols)),
    ),
    Verb(
        "pipeline",
        "the declared steps (generate if absent -> ingest -> preprocess -> evaluate -> grid -> report), locally",
        "musicrec.pipeline:run_pipeline",
    ),
    Verb(
        "score",
        "score external predictions on the platform's protocols",
        "musicrec.evaluate.job:run_score",
        reads=lambda config: (f"{config.score.examples}_examples",) if config.score.examples else (),
        check="musicrec.evaluate.job:check_score",
        flags=(
            Flag("--predictions", ("score.predictions",), "parquet with uid, task, items (best first)"),
            Flag("--examples", ("score.examples",), "the lake's examples to score on", PROTOCOL_KINDS),
            Flag("--lake", ("lake.root",), "lake root (sets lake.root)"),
            Flag("--dataset", ("dataset.name",), "dataset name (sets dataset.name)"),
            Flag("--split", ("score.split",), "holdout split or GTS window (default test)", WINDOWS),
            Flag("--feedback", ("score.feedback",), "GTS feedback (default listen_plus)", FEEDBACKS),
            Flag("--k", ("score.ks",), "comma-separated cut-offs (default 10,100)", parse=_ks),
            Flag("--out", ("score.out",), "write the metrics as JSON here"),
        ),
    ),
    Verb(
        "bench",
        "run a benchmark and log it to the MLflow experiment 'benchmarks'",
        "musicrec.bench.run:run_bench",
        check="musicrec.bench.run:check_bench",
        experiment="benchmarks",
        flags=(
            Flag("name", ("bench.name",), "which benchmark (sets bench.name)", ("generate", "preprocess", "evaluate", "train", "als", "retrieval")),
            Flag("--sizes", ("bench.sizes",), "comma-separated sizes (benchmark-specific; sets bench.sizes)"),
        ),
    ),
    Verb(
        "vacuum",
        "delete Delta files no version inside vacuum.retention_hours needs",
        "musicrec.lake.vacuum:run_vacuum",
        spark=True,
    ),
    Verb(
        "train",
        "train a model (model.family) on the lake's training sequences; sequential families on Ray Train",
        "musicrec.train.job:run_train",
        reads=("sequences", "holdout_examples"),
    ),
    Verb(
        "register",
        "register a training run's model as <dataset>.<task>.<family> (once per run)",
        "musicrec.registry.register:run_register",
        check="musicrec.registry.register:check_register",
    ),
    Verb(
        "promote",
        "move a registered model's champion alias to its best version by a validation metric",
        "musicrec.registry.promote:run_promote",
        check="musicrec.registry.promote:check_promote",
    ),
    Verb(
        "tune",
        "sweep model.family over tune.space with Ray Tune (Optuna + ASHA); register the best trial",
        "musicrec.tune.sweep:run_tune",
        reads=("sequences", "holdout_examples"),
        check="musicrec.tune.sweep:check_tune",
    ),
    Verb(
        "recommend",
        "a model's top-K per holdout user and task (faiss index + task filter) into `recommendations` (Spark)",
        "musicrec.retrieval.recommend:run_recommend",
        spark=True,
        reads=("holdout_examples",),
        writes=("recommendations",),
        check="musicrec.retrieval.recommend:check_recommend",
        flags=(
            Flag("--model", ("recommend.model",), "run id, runs:/ URI or models:/<name>@<alias> (sets recommend.model)"),
            Flag("--k", ("recommend.k",), "items per user and task (sets recommend.k)", parse=int),
        ),
    ),
    Verb(
        "grid",
        "train every cell of `grid` (general vs on task, fine-tuned, shuffle), register and promote per task; "
        "then `grid.baselines` under the global temporal split",
        "musicrec.experiments.grid:run_grid",
        reads=("sequences", "holdout_examples", "gts_examples"),
        check="musicrec.experiments.grid:check_grid",
    ),
    Verb(
        "report",
        "the latest grid run's results and baselines tables (Markdown, CSV, bar charts, training curves), "
        "read back from MLflow",
        "musicrec.experiments.report:run_report",
    ),
)
REGISTRY: dict[str, Verb] = {verb.name: verb for verb in _REGISTRY}
VERBS: dict[str, Verb] = {name: verb for name, verb in REGISTRY.items() if verb.built}
PLANNED: dict[str, str] = {name: verb.help for name, verb in REGISTRY.items() if not verb.built}


def writer_of(table: str) -> str:
    """The verb that writes ``table`` (for "run X first" hints)."""
    return next((verb.name for verb in VERBS.values() if table in verb.writes), "?")
