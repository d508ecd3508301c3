"""Evaluation runners for the holdout (docs/holdout.md) and GTS (docs/temporal-split.md) protocols.

A model input is always derived from the user's history in the task's domain with the
shared pure derivation of :mod:`musicrec.prep.sequences` (``lh_track`` for a general
model, ``disc_track`` k-condensed for an on-task T1 model, ...), while the candidate
filter uses the full history (docs/tasks.md §5):

- holdout: the history is ``holdout_examples.history_items`` (before the cutoff);
- GTS: the history is the user's ``lh_track`` / ``lh_artist`` (k=1) row of ``sequences``
  under protocol ``gts_<window>_<feedback>``. The model's own sequence (e.g.
  ``disc_track`` with k) is derived from that row by the same function that wrote the
  table, so it equals the stored row by construction and only the lh rows are read.

Ground truth is the distinct target items, in raw ids. Items the model does not know
(absent from its training index) stay in the targets, so they count in the
denominators and can never be hit. Users with empty targets are not evaluated (counted);
users whose derived input is empty are evaluated (the model scores an empty history).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from musicrec.arrays import Ragged
from musicrec.contract import GTS_TASKS, HOLDOUT, HOLDOUT_TASKS, Protocol, parse_name
from musicrec.evaluate.metrics import METRICS, compute_metrics, coverage
from musicrec.evaluate.ranking import ScoreFn, default_batch_size, rank_users_scored, task_filter
from musicrec.lake.readers import TaskExamples, load_gts, load_holdout
from musicrec.models import FittedModel
from musicrec.prep.sequences import sequence_mask

RESULT_COLUMNS: tuple[str, ...] = (
    "model",
    "task",
    "protocol",
    "split",
    "variant",
    "metric",
    "k",
    "value",
    "users_evaluated",
    "users_skipped",
    "skipped_empty_targets",
    "users_empty_input",
    "unknown_target_items",
)

PREDICTION_SCHEMA = pa.schema([("uid", pa.int64()), ("task", pa.string()), ("items", pa.list_(pa.int64()))])


@dataclass(frozen=True)
class EvalOptions:
    """What to compute besides the default full-catalogue metrics."""

    ks: tuple[int, ...] = (10, 100)
    metrics: tuple[str, ...] = METRICS
    batch_size: int | None = None
    # Shuffle ablation (docs/metrics.md): set a seed to run it.
    shuffle_seed: int | None = None
    # Sampled evaluation (paper 001 §4.1), never the default.
    sampled: bool = False
    sampled_n: int = 1000
    sampled_ks: tuple[int, ...] = (1, 5, 10, 20)
    sampled_seed: int = 0


def model_inputs(model: FittedModel, history: Ragged) -> Ragged:
    """Each user's input in the model's training domain, as dense indices of the model."""
    kind, _ = parse_name(model.sequence)
    # The batched form of derive_items: each row is one user's history.
    derived = history.keep(sequence_mask(history.row_ids(), history.values, kind, model.k))
    return model.items.map_rows(derived)[0]


def shuffled(inputs: Ragged, uids: np.ndarray, seed: int) -> Ragged:
    """Each row permuted uniformly by a generator seeded with (seed, uid), so batch order is irrelevant."""
    values = inputs.values.copy()
    for i, uid in enumerate(uids):
        lo, hi = inputs.offsets[i], inputs.offsets[i + 1]
        values[lo:hi] = np.random.default_rng([seed, int(uid)]).permutation(values[lo:hi])
    return Ragged(values, inputs.offsets)


def _score_fn(model: FittedModel, inputs: Ragged) -> ScoreFn:
    def score(start: int, stop: int) -> torch.Tensor:
        return model.model.score(inputs.rows(start, stop))

    return score


def rank_task(
    model: FittedModel,
    ex: TaskExamples,
    k: int,
    batch_size: int | None = None,
    shuffle_seed: int | None = None,
) -> np.ndarray:
    """Raw item ids (n_users, k), padded -1, that ``model`` recommends on ``ex.task``."""
    inputs = model_inputs(model, ex.history)
    if shuffle_seed is not None:
        inputs = shuffled(inputs, ex.uids, shuffle_seed)
    return recommend(model, ex.history, ex.task, k, batch_size, inputs)[0]


def recommend(
    model: FittedModel,
    history: Ragged,
    task: str,
    k: int,
    batch_size: int | None = None,
    inputs: Ragged | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k raw item ids (n_users, k; padded -1) and their scores (padded -inf) for users with these
    histories (raw item ids in the task's domain, oldest first), under the task's candidate filter.

    The model's input is derived from the history as for its training sequence (``inputs``
    overrides it, e.g. shuffled); the filter uses the whole history. Evaluation and the served
    model (:mod:`musicrec.registry.pyfunc`) both rank through here.
    """
    inputs = model_inputs(model, history) if inputs is None else inputs
    filters = model.items.map_rows(history)[0] if task_filter(task) else inputs
    batch_size = batch_size or default_batch_size(len(model.items))
    dense, scores = rank_users_scored(_score_fn(model, inputs), filters, task, k, batch_size)
    return model.items.to_raw(dense), scores


def predictions(model: FittedModel, examples: Sequence[TaskExamples], k: int = 100) -> pa.Table:
    """The model's rankings as an external-predictions table (uid, task, items)."""
    parts = []
    for ex in examples:
        if not model.runs_on(ex.task):
            continue
        ranked = rank_task(model, ex, k)
        items = [row[row >= 0] for row in ranked]
        parts.append(
            pa.table(
                {
                    "uid": pa.array(ex.uids, pa.int64()),
                    "task": pa.array([ex.task] * len(ex.uids), pa.string()),
                    "items": pa.array(items, pa.list_(pa.int64())),
                },
                schema=PREDICTION_SCHEMA,
            )
        )
    return pa.concat_tables(parts) if parts else PREDICTION_SCHEMA.empty_table()


def _sample_negatives(rng: np.random.Generator, n_items: int, forbidden: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` distinct items drawn uniformly from those not in ``forbidden`` (sorted)."""
    n = min(n, n_items - len(forbidden))
    picked = np.zeros(0, dtype=np.int64)
    while len(picked) < n:
        draw = rng.integers(0, n_items, size=2 * n + len(forbidden))
        allowed = draw[~np.isin(draw, forbidden)]
        # First occurrences of an i.i.d. uniform stream are a uniform sample without replacement.
        merged = np.concatenate([picked, allowed])
        _, first = np.unique(merged, return_index=True)
        picked = merged[np.sort(first)]
    return picked[:n]


def sampled_hit_rates(model: FittedModel, ex: TaskExamples, options: EvalOptions) -> dict[int, np.ndarray]:
    """Sampled HR@k per evaluated user (those with targets), for each k of ``sampled_ks``.

    For every (user, distinct target item) the target is ranked among ``sampled_n`` items
    drawn uniformly from the model's catalogue minus the user's history and targets; ties
    are broken by item id. A target the model does not know is a miss. A user's HR@k is
    the mean over their target items, so every user weighs the same.
    """
    inputs = model_inputs(model, ex.history)
    known_history = model.items.map_rows(ex.history)[0]
    evaluated = ex.targets.lengths > 0
    n_items = len(model.items)
    hits = {k: np.zeros(int(evaluated.sum())) for k in options.sampled_ks}
    batch = options.batch_size or default_batch_size(n_items)
    slot = 0
    for start in range(0, len(ex.uids), batch):
        stop = min(start + batch, len(ex.uids))
        scores = model.model.score(inputs.rows(start, stop)).cpu().numpy()
        for u in range(start, stop):
            if not evaluated[u]:
                continue
            targets = model.items.to_dense(ex.targets[u])
            forbidden = np.union1d(known_history[u], targets[targets >= 0])
            rng = np.random.default_rng([options.sampled_seed, int(ex.uids[u])])
            ranks = np.full(len(targets), np.inf)
            row = scores[u - start]
            for j, t in enumerate(targets):
                if t < 0:
                    continue
                neg = _sample_negatives(rng, n_items, forbidden, options.sampled_n)
                s_neg, s_t = row[neg], row[t]
                ranks[j] = np.sum(s_neg > s_t) + np.sum((s_neg == s_t) & (neg < t))
            for k in options.sampled_ks:
                hits[k][slot] = np.mean(ranks < k)
            slot += 1
    return hits


def _rows(
    model: str, ex: TaskExamples, protocol: str, split: str, variant: str, values: dict, base: dict
) -> list[dict]:
    return [
        {
            "model": model,
            "task": ex.task,
            "protocol": protocol,
            "split": split,
            "variant": variant,
            "metric": metric,
            "k": k,
            "value": value,
            **base,
        }
        for (metric, k), value in values.items()
    ]


def evaluate_task(
    model: FittedModel, ex: TaskExamples, protocol: str, split: str, options: EvalOptions = EvalOptions()
) -> list[dict]:
    """Tidy result rows of one model on one task."""
    width = max(options.ks)
    inputs = model_inputs(model, ex.history)
    known = model.items.to_dense(ex.targets.values) >= 0
    ranked = rank_task(model, ex, width, options.batch_size)
    result = compute_metrics(ranked, ex.targets, options.ks, options.metrics)
    base = {
        "users_evaluated": result.n_evaluated,
        "users_skipped": result.skipped_empty_targets,
        "skipped_empty_targets": result.skipped_empty_targets,
        "users_empty_input": int((inputs.lengths[result.evaluated] == 0).sum()),
        "unknown_target_items": int((~known).sum()),
    }
    full = result.mean()
    for k in options.ks:
        full[("coverage", k)] = coverage(ranked[result.evaluated], k, len(model.items))
    rows = _rows(model.name, ex, protocol, split, "full", full, base)
    if options.shuffle_seed is not None:
        ranked_s = rank_task(model, ex, width, options.batch_size, options.shuffle_seed)
        shuf = compute_metrics(ranked_s, ex.targets, options.ks, options.metrics).mean()
        for k in options.ks:
            shuf[("coverage", k)] = coverage(ranked_s[result.evaluated], k, len(model.items))
        change = {key: (v - full[key]) / full[key] if full[key] else math.nan for key, v in shuf.items()}
        rows += _rows(model.name, ex, protocol, split, "shuffled", shuf, base)
        rows += _rows(model.name, ex, protocol, split, "shuffle_change", change, base)
    if options.sampled and task_filter(ex.task) != "only":
        hits = sampled_hit_rates(model, ex, options)
        sampled = {("hr", k): float(v.mean()) if len(v) else math.nan for k, v in hits.items()}
        rows += _rows(model.name, ex, protocol, split, "sampled", sampled, base)
    return rows


def evaluate(
    models: Sequence[FittedModel],
    examples: Sequence[TaskExamples],
    protocol: str,
    split: str,
    options: EvalOptions = EvalOptions(),
) -> pd.DataFrame:
    """Every model on every task it runs on, as one tidy table (columns RESULT_COLUMNS).

    Tasks without any example row produce no rows (rather than rows of NaN).
    """
    rows = []
    for model in models:
        for ex in examples:
            if len(ex.uids) and model.runs_on(ex.task):
                rows += evaluate_task(model, ex, protocol, split, options)
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def evaluate_holdout(
    models: Sequence[FittedModel],
    lake_root: str,
    dataset: str,
    split: str = "test",
    tasks: Sequence[str] = HOLDOUT_TASKS,
    options: EvalOptions = EvalOptions(),
) -> pd.DataFrame:
    return evaluate(models, load_holdout(lake_root, dataset, split, tasks), HOLDOUT.name, split, options)


def evaluate_gts(
    models: Sequence[FittedModel],
    lake_root: str,
    dataset: str,
    window: str = "test",
    feedback: str = "listen_plus",
    tasks: Sequence[str] = GTS_TASKS,
    options: EvalOptions = EvalOptions(),
) -> pd.DataFrame:
    examples = load_gts(lake_root, dataset, window, feedback, tasks)
    return evaluate(models, examples, Protocol.gts(window, feedback).name, window, options)


def format_results(df: pd.DataFrame, digits: int = 4) -> str:
    """One line per (model, protocol, split, task, variant), one column per metric@k."""
    if df.empty:
        return "(no results)"
    keys = ["model", "protocol", "split", "task", "variant"]
    wide = df.assign(col=df["metric"] + "@" + df["k"].astype(str)).pivot_table(
        index=keys, columns="col", values="value", aggfunc="first", sort=False
    )
    users = df.groupby(keys, sort=False)[["users_evaluated", "users_skipped"]].first()
    return wide.round(digits).join(users).reset_index().to_string(index=False)


def _metric_name(name: str) -> str:
    # MLflow metric names allow only alphanumerics, _ - . space : and /.
    return re.sub(r"[^/\w.\- :]", "_", name)


def log_results(df: pd.DataFrame, prefix: str = "", artifact_file: str = "evaluation/results.csv") -> None:
    """Log each value to the active MLflow run as ``<split>/<task>/<metric>_at_<k>`` and the table as CSV.

    ``@`` is not allowed in MLflow metric names, hence ``ndcg_at_100``. Variants other than
    ``full`` insert their name (``test/T1/shuffle_change/ndcg_at_100``); the model and
    protocol lead the name when the table holds several. Non-finite values (nobody
    evaluated, a relative change from zero) are left to the CSV.
    """
    import mlflow

    many_models = df["model"].nunique() > 1
    many_protocols = df["protocol"].nunique() > 1
    metrics: dict[str, float] = {}
    for r in df.itertuples(index=False):
        parts = ([r.model] if many_models else []) + ([r.protocol] if many_protocols else [])
        parts += [r.split, r.task] + ([] if r.variant == "full" else [r.variant])
        stem = prefix + "/".join(parts)
        if math.isfinite(r.value):
            metrics[_metric_name(f"{stem}/{r.metric}_at_{r.k}")] = float(r.value)
        metrics[_metric_name(f"{stem}/users_evaluated")] = float(r.users_evaluated)
    mlflow.log_metrics(metrics)
    mlflow.log_text(df.to_csv(index=False), artifact_file)
