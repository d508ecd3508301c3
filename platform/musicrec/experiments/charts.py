"""The report's figures: one grouped bar chart per task (approaches x models, one panel per metric)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from musicrec.experiments.table import METRICS, approach_order


def bar_chart(long: pd.DataFrame, task: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
