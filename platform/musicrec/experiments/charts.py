"""The report's figures: one grouped bar chart per task (approaches x models, one panel per metric),
and the training curves of the grid's sequential runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from musicrec.experiments.table import METRICS, approach_order


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(long: pd.DataFrame, task: str, path: Path) -> Path:
    plt = _pyplot()

    rows = long[long["task"] == task]
    approaches = [a for a in approach_order(long) if a in set(rows["approach"])]
    models = list(dict.fromkeys(rows["model"]))
    width = 0.8 / max(len(models), 1)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4), squeeze=False)
    for axis, (_, metric) in zip(axes[0], METRICS, strict=True):
        for i, model in enumerate(models):
            values = rows[(rows["model"] == model) & (rows["metric"] == metric)].set_index("approach")["value"]
            heights = [values.get(a, float("nan")) for a in approaches]
            axis.bar([x + i * width for x in range(len(approaches))], heights, width, label=model)
        axis.set_xticks([x + width * (len(models) - 1) / 2 for x in range(len(approaches))])
        axis.set_xticklabels(approaches, rotation=20, ha="right", fontsize=8)
        axis.set_title(f"{task} {metric}")
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# (history column, panel title): what each epoch of a sequential run logged.
CURVES: tuple[tuple[str, str], ...] = (("loss", "training loss"), ("val_ndcg", "validation NDCG@100 (early stopping)"))


def training_curves(history: pd.DataFrame, path: Path) -> Path:
    """One line per run (``history``: run, epoch, loss, val_ndcg), a panel per quantity."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4), squeeze=False)
    for axis, (column, title) in zip(axes[0], CURVES, strict=True):
        for run, rows in history.groupby("run", sort=False):
            rows = rows.sort_values("epoch")
            axis.plot(rows["epoch"], rows[column], marker="o", markersize=3, label=run)
        axis.set_xlabel("epoch")
        axis.set_title(title)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
