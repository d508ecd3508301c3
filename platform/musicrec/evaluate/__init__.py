"""Exact evaluation: metrics, candidate filters + top-K, protocol runners, external predictions.

Pure numpy/torch/pyarrow (no Spark), so the same code runs in a job, a test or a notebook.
"""

from musicrec.evaluate.external import score_examples, score_predictions, validate_predictions
from musicrec.evaluate.metrics import METRICS, MetricResult, Ragged, compute_metrics, coverage
from musicrec.evaluate.protocols import (
    EvalOptions,
    FittedModel,
    evaluate,
    evaluate_gts,
    evaluate_holdout,
    fit_model,
    format_results,
    log_results,
)
from musicrec.evaluate.ranking import bench_evaluate, rank_users, topk
from musicrec.evaluate.scorers import ItemIndex, MostPop, Scorer, Transition

__all__ = [
    "METRICS",
    "EvalOptions",
    "FittedModel",
    "ItemIndex",
    "MetricResult",
    "MostPop",
    "Ragged",
    "Scorer",
    "Transition",
    "bench_evaluate",
    "compute_metrics",
    "coverage",
    "evaluate",
    "evaluate_gts",
    "evaluate_holdout",
    "fit_model",
    "format_results",
    "log_results",
    "rank_users",
    "score_examples",
    "score_predictions",
    "topk",
    "validate_predictions",
]
