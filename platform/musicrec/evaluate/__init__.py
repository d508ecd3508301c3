"""Exact evaluation of any model: metrics, candidate filters + top-K, protocol runners, external predictions.

Pure numpy/torch/pyarrow (no Spark), so the same code runs in a job, a test or a notebook.
"""

from musicrec.evaluate.external import score_examples, score_predictions, validate_predictions
from musicrec.evaluate.metrics import METRICS, MetricResult, compute_metrics, coverage
from musicrec.evaluate.protocols import (
    EvalOptions,
    evaluate,
    evaluate_gts,
    evaluate_holdout,
    format_results,
    log_results,
)
from musicrec.evaluate.ranking import rank_users, topk

__all__ = [
    "METRICS",
    "EvalOptions",
    "MetricResult",
    "compute_metrics",
    "coverage",
    "evaluate",
    "evaluate_gts",
    "evaluate_holdout",
    "format_results",
    "log_results",
    "rank_users",
    "score_examples",
    "score_predictions",
    "topk",
    "validate_predictions",
]
