"""The ``evaluate`` and ``score`` verbs: scorers or a trained model on every task and protocol, logged to MLflow.

Each scorer is fitted twice per task: as a *general* model on the domain's listening history
(``lh_track`` / ``lh_artist``, evaluated with the task's post-hoc candidate filter) and *on task*
on the task's own sequence (``disc_*`` / ``fam_*``) — the comparison of paper 000's Tables 3–4.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from musicrec.config import Config
from musicrec.contract import DOMAINS, HOLDOUT, TASKS, Protocol, sequence_name
from musicrec.errors import ConfigError, InputError
from musicrec.evaluate.external import score_predictions
from musicrec.evaluate.protocols import EvalOptions, evaluate, format_results, log_results
from musicrec.lake.readers import load_gts, load_holdout, read_training_sequences
from musicrec.models import FittedModel, Model, family_class, fit_model, load_model
from musicrec.tracking.runs import table_versions

log = logging.getLogger(__name__)

# (training sequence, tasks it is evaluated on): general models first (the domain's listening
# history, on every task of the domain), then on-task models (each task's own sequence).
TRAINING: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((sequence_name("lh", d), tuple(n for n, t in TASKS.items() if t.domain == d)) for d in DOMAINS),
    *((t.truth, (n,)) for n, t in TASKS.items() if t.kind != "lh"),
)
READS = ("sequences", "holdout_examples", "gts_examples")
PRINTED_METRICS = ("ndcg", "recall", "hr")


def _protocols(config: Config) -> list[Protocol]:
    """Every evaluated protocol: the holdout, and the GTS stage of the evaluated split per feedback."""
    out = []
    for kind in config.evaluate.protocols:
        if kind == "holdout":
            out.append(HOLDOUT)
        else:
            out += [Protocol.gts(config.evaluate.split, fb) for fb in config.gts.feedbacks]
    return out


def relative_to_general(df: pd.DataFrame) -> pd.DataFrame:
    """On-task rows with (on_task - general) / general per metric, as in paper 000's tables."""
    full = df[df["variant"] == "full"].copy()
    full["scorer"] = full["model"].str.split("[").str[0]
    full["training"] = full["model"].str.extract(r"\[(.*)\]")[0]
    general = full[full["training"].str.startswith("lh_")]
    on_task = full[~full["training"].str.startswith("lh_")]
    keys = ["scorer", "protocol", "split", "task", "metric", "k"]
    merged = on_task.merge(general[[*keys, "value"]], on=keys, suffixes=("", "_general"))
    merged["relative_change"] = [
        (v - g) / g if g else math.nan for v, g in zip(merged["value"], merged["value_general"], strict=True)
    ]
    return merged[["model", *keys, "value", "value_general", "relative_change"]]


def _log_ndcg_plot(df: pd.DataFrame, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = df[(df["variant"] == "full") & (df["metric"] == "ndcg") & (df["k"] == k)]
    wide = full.pivot_table(index=["protocol", "task"], columns="model", values="value", aggfunc="first")
    fig, ax = plt.subplots(figsize=(max(8, len(wide) * 0.8), 4.5))
    wide.plot.bar(ax=ax)
    ax.set_ylabel(f"NDCG@{k}")
    ax.set_title("NDCG per task and training sequence")
    ax.legend(fontsize=7)
    fig.tight_layout()
    mlflow.log_figure(fig, "evaluation/ndcg.png")
    plt.close(fig)  # pyplot keeps every figure until closed: a grid or a sweep evaluates many times


def load_trained(uri: str, key: str = "evaluate.model_uri") -> FittedModel:
    """A model saved by ``musicrec train``: a saved-model folder, an MLflow run id (its ``model``
    artifact), any MLflow artifact URI (``runs:/<id>/model``), or a registered model
    (``models:/<dataset>.<task>.<family>@champion`` or ``/<version>``: evaluated on its task only)."""
    from musicrec.registry.pyfunc import fitted_from_pyfunc

    try:
        if Path(uri).is_dir():
            return load_model(uri)
        artifact_uri = f"runs:/{uri}/model" if re.fullmatch(r"[0-9a-f]{32}", uri) else uri
        # Loading reads every file into memory, so the download is removed at once.
        with tempfile.TemporaryDirectory(prefix="musicrec-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp)
            # A registered model is the pyfunc wrapping the saved folder (MLmodel at its root).
            return fitted_from_pyfunc(local) if (Path(local) / "MLmodel").is_file() else load_model(local)
    except Exception as e:  # noqa: BLE001 - MLflow raises several types for a wrong id or URI
        raise InputError(f"{key}={uri!r}: no saved model there ({type(e).__name__}: {e})") from None


def _scorer(config: Config, family: str) -> Model:
    """A built-in scorer: the configured ``model`` when it is of that family (a preset), else the defaults."""
    return family_class(family)(config.model if config.model.family == family else None, seed=config.seed)


def _models(config: Config, proto: Protocol) -> Iterator[FittedModel]:
    """The models evaluated on one protocol: the trained model of ``evaluate.model_uri``, or every
    scorer fitted on every training sequence of the protocol (each read once, shared by the scorers)."""
    if config.evaluate.model_uri:
        yield load_trained(config.evaluate.model_uri)
        return
    for sequence, all_tasks in TRAINING:
        # next_track / next_artist exist only in the GTS protocol.
        tasks = tuple(t for t in all_tasks if t in proto.tasks)
        train = read_training_sequences(config.lake.root, config.dataset.name, proto.name, sequence, 1)
        for family in config.evaluate.scorers:
            yield fit_model(
                f"{family}[{sequence}]",
                _scorer(config, family),
                train.items,
                sequence=sequence,
                tasks=tasks,
                timestamps=train.timestamps,
            )


def run_evaluate(config: Config) -> dict[str, Any]:
    options = EvalOptions(
        ks=tuple(config.evaluate.ks),
        batch_size=config.evaluate.batch_size,
        shuffle_seed=config.seed if config.evaluate.shuffle else None,
        sampled=config.evaluate.sampled,
        sampled_n=config.evaluate.sampled_n,
        sampled_seed=config.seed,
    )
    # Logs into the active run: the verb's run, opened by the runner with the config and lineage.
    split = config.evaluate.split
    tables = []
    versions = table_versions(config, READS)
    if config.evaluate.model_uri:
        mlflow.log_param("model_uri", config.evaluate.model_uri)
    for proto in _protocols(config):
        protocol, label = proto.name, proto.feedback or proto.name
        # Examples are read once per protocol and shared by every model.
        if proto.kind == "holdout":
            examples = load_holdout(config.lake.root, config.dataset.name, split)
        else:
            examples = load_gts(config.lake.root, config.dataset.name, split, label)
        for model in _models(config, proto):
            log.info("evaluating %s on %s", model.name, label)
            df = evaluate([model], examples, protocol, split, options)
            with mlflow.start_run(run_name=f"{model.name} {label}", nested=True):
                mlflow.log_params(
                    {
                        "family": model.model.family,
                        "training_sequence": model.sequence,
                        "k": model.k,
                        "protocol": protocol,
                        "tasks": ",".join(t for t in model.tasks or () if t in proto.tasks),
                        **{f"table_version.{n}": v for n, v in versions.items()},
                    }
                )
                if len(df):
                    log_results(df)
            if len(df):
                tables.append(df)
    if not tables:
        raise InputError(
            f"no evaluation examples in {config.lake.root}/{config.dataset.name} for split "
            f"{split!r}: too few users or events for gt_size={config.holdout.gt_size}?"
        )
    results = pd.concat(tables, ignore_index=True)
    log_results(results, prefix="all/")
    mlflow.log_text(format_results(results), "evaluation/results.txt")
    # The printed table keeps the headline metrics; every metric is in MLflow.
    text = format_results(results[results["metric"].isin(PRINTED_METRICS)])
    relative = relative_to_general(results)
    mlflow.log_text(relative.to_csv(index=False), "evaluation/on_task_vs_general.csv")
    _log_ndcg_plot(results, max(config.evaluate.ks))
    print(text)
    k = max(config.evaluate.ks)
    headline = relative[(relative["metric"] == "ndcg") & (relative["k"] == k)]
    if len(headline):
        print(f"\nOn-task vs general (NDCG@{k}, relative change):")
        print(
            headline[["model", "protocol", "task", "value", "value_general", "relative_change"]]
            .round(4)
            .to_string(index=False)
        )
    return {"result_rows": len(results), "table_versions": versions}


def check_score(config: Config) -> None:
    """What ``score`` needs from the user, checked before its run opens."""
    if not config.score.predictions:
        raise ConfigError("score needs a predictions file: --predictions FILE (score.predictions)")
    if config.score.examples is None:
        raise ConfigError("score needs the examples to score on: --examples holdout|gts (score.examples)")
    if "://" not in config.score.predictions and not Path(config.score.predictions).is_file():
        raise InputError(f"predictions file {config.score.predictions} not found")


def run_score(config: Config) -> dict[str, Any]:
    score = config.score
    assert score.examples is not None  # check_score ran
    try:
        result = score_predictions(
            score.predictions,
            score.examples,
            config.lake.root,
            config.dataset.name,
            split=score.split,
            ks=tuple(score.ks),
            feedback=score.feedback,
            output_json=score.out or None,
        )
    except (ValueError, FileNotFoundError) as e:
        # Bad predictions or a missing file/table are the user's to fix: one clear line, no traceback.
        raise InputError(str(e)) from e
    print(json.dumps(result, indent=2, sort_keys=True, default=float))
    # Named as evaluate names them (``@`` is not allowed in MLflow metric names): test/T1/ndcg_at_10.
    mlflow.log_metrics(
        {
            f"{score.split}/{task}/{name.replace('@', '_at_')}": float(value)
            for task, scores in result.items()
            for name, value in scores.items()
            if isinstance(value, int | float) and math.isfinite(value)
        }
    )
    return {"tasks": sorted(result), "written": score.out or "-"}
