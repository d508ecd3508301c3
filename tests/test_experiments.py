"""The experiment grid (config, the runs it expands to) and its results table, on hand-made rows."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from musicrec.config import ConfigError, load_config
from musicrec.experiments.baseline_table import COLUMNS, baseline_markdown, baseline_results, baseline_wide
from musicrec.experiments.cells import BASELINE, baseline_config, plan_baselines, plan_runs, run_config
from musicrec.experiments.table import (
    GENERAL,
    approach_order,
    best,
    results_from_runs,
    to_csv_frame,
    to_markdown,
    wide,
    with_change,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "conf" / "experiments"
DEMO = EXPERIMENTS / "demo.yaml"
MODELS = "grid.models={als: {family: als}, g: {family: gsasrec}, s: {family: sasrec}}"


def _grid(*overrides: str):
    return load_config(overrides=(MODELS, *overrides))


def test_demo_declares_the_issue_grid():
    grid = load_config([DEMO]).grid
    assert grid.tasks == ["T1", "T2", "T3", "T4"]
    assert {m.family for m in grid.models.values()} == {"als", "gsasrec"}
    labels = {(c.model, c.label, c.shuffle) for c in grid.cells}
    assert ("als", "general + filter", False) in labels and ("als", "on task (k=1)", False) in labels
    assert ("gsasrec", "on task (k=1)", True) in labels and ("gsasrec", "fine-tuned on task (k=1)", False) in labels


def test_one_size_declares_paper_000s_grid():
    config = load_config([EXPERIMENTS / "one-size.yaml"])
    assert config.dataset.name == "synthetic-medium" and config.grid.tasks == ["T1", "T2", "T3", "T4"]
    labels = {(c.model, c.label) for c in config.grid.cells}
    for k in (1, 3, 5):
        assert {("als", f"on task (k={k})"), ("gsasrec", f"on task (k={k})"), ("gsasrec", f"fine-tuned on task (k={k})")} <= labels
    assert {("als", GENERAL), ("gsasrec", GENERAL)} <= labels
    assert [(c.model, c.k) for c in config.grid.cells if c.shuffle] == [("gsasrec", 1)]
    runs = plan_runs(config.grid)
    # Per model: a general run per domain, then each on-task cell once per task.
    assert len(runs) == (2 + 3 * 4) + (2 + 6 * 4)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("[{model: nope, training: general}]", "not a key of grid.models"),
        ("[{model: als, training: general, k: 3}]", "k=1 and no fine_tune_from"),
        ("[{model: g, training: on_task, fine_tune_from: g}]", "no general cell of it is declared before"),
        ("[{model: als, training: general}, {model: als, training: on_task, fine_tune_from: als}]", "cannot be fine-tuned"),
        ("[{model: s, training: general}, {model: g, training: on_task, fine_tune_from: s}]", "is a sasrec model"),
        ("[{model: als, training: on_task}, {model: als, training: on_task}]", "two 'on task (k=1)' cells"),
        ("[{model: als, training: on_task, k: 4}]", "not among preprocess.ks"),
        ("[{model: als, training: on_task, shuffled: true}]", "shuffled"),
    ],
)
def test_invalid_grids_fail_naming_the_problem(cells, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _grid(f"grid.cells={cells}")


def test_a_grid_reports_at_100():
    with pytest.raises(ConfigError, match="evaluate.ks must include 100"):
        _grid("grid.cells=[{model: als, training: general}]", "evaluate.ks=[10]")


def test_unknown_tasks_are_refused():
    with pytest.raises(ConfigError, match="distinct holdout tasks"):
        _grid("grid.tasks=[T1, next_track]")


def test_general_cells_train_per_domain_and_on_task_cells_per_task():
    config = _grid(
        "grid.tasks=[T1, T2, T4]",
        "grid.cells=[{model: g, training: general}, {model: g, training: on_task, k: 3, fine_tune_from: g, shuffle: true}]",
    )
    runs = plan_runs(config.grid)
    assert [(r.cell.label, r.sequence, r.tasks, r.parent) for r in runs] == [
        (GENERAL, "lh_track", ("T1", "T2"), None),
        (GENERAL, "lh_artist", ("T4",), None),
        ("fine-tuned on task (k=3)", "disc_track", ("T1",), ("g", "lh_track")),
        ("fine-tuned on task (k=3)", "fam_track", ("T2",), ("g", "lh_track")),
        ("fine-tuned on task (k=3)", "fam_artist", ("T4",), ("g", "lh_artist")),
    ]
    train = run_config(config, runs[2], 7, "parent-run").train
    assert (train.sequence, train.k, train.sequences_version, train.init_from) == ("disc_track", 3, 7, "parent-run")
    assert not train.register and train.task is None
    assert run_config(config, runs[2], 7).evaluate.shuffle and not run_config(config, runs[0], 7).evaluate.shuffle
    assert run_config(config, runs[0], 7).model.family == "gsasrec"


def _runs() -> pd.DataFrame:
    """Rows as ``mlflow.search_runs`` gives them (oldest first)."""
    return pd.DataFrame([
        {"tags.grid.model": "als", "tags.grid.approach": GENERAL, "tags.grid.shuffle": "false",
         "metrics.test/T1/ndcg_at_100": 0.10, "metrics.test/T1/recall_at_100": 0.40,
         "metrics.test/T2/ndcg_at_100": 0.30, "metrics.test/T2/recall_at_100": 0.50},
        {"tags.grid.model": "gsasrec", "tags.grid.approach": "on task (k=1)", "tags.grid.shuffle": "true",
         "metrics.test/T1/ndcg_at_100": 0.20, "metrics.test/T1/recall_at_100": 0.30,
         "metrics.test/T1/shuffled/ndcg_at_100": 0.05, "metrics.test/T1/shuffled/recall_at_100": 0.10},
        {"tags.grid.model": "als", "tags.grid.approach": "on task (k=1)", "tags.grid.shuffle": "false",
         "metrics.test/T1/ndcg_at_100": 0.15, "metrics.test/T1/recall_at_100": 0.20,
         "metrics.test/T2/ndcg_at_100": math.nan, "metrics.test/T2/recall_at_100": math.nan},
        {"tags.grid.model": "gsasrec", "tags.grid.approach": GENERAL, "tags.grid.shuffle": "false",
         "metrics.test/T1/ndcg_at_100": 0.25, "metrics.test/T1/recall_at_100": 0.35},
    ])


def test_rows_are_read_from_the_runs_metrics_including_the_shuffled_ones():
    long = results_from_runs(_runs())
    assert len(long) == 12  # NaN metrics are no rows
    shuffled = long[long.approach == "on task (k=1), shuffled"]
    assert set(zip(shuffled.metric, shuffled.value, strict=True)) == {("NDCG@100", 0.05), ("Recall@100", 0.10)}
    assert approach_order(long) == [GENERAL, "on task (k=1)", "on task (k=1), shuffled"]


def test_relative_change_is_against_the_general_model_of_the_same_task_model_and_metric():
    changed = with_change(results_from_runs(_runs())).set_index(["approach", "task", "model", "metric"])["change"]
    assert changed["on task (k=1)", "T1", "als", "NDCG@100"] == pytest.approx(0.5)
    assert changed["on task (k=1)", "T1", "gsasrec", "NDCG@100"] == pytest.approx(-0.2)
    assert changed["on task (k=1), shuffled", "T1", "gsasrec", "Recall@100"] == pytest.approx(0.10 / 0.35 - 1)
    assert math.isnan(changed[GENERAL, "T1", "als", "NDCG@100"])


def test_wide_table_rows_are_approaches_and_columns_task_model_metric_with_the_best_marked():
    table = wide(results_from_runs(_runs()))
    assert list(table.index) == [GENERAL, "on task (k=1)", "on task (k=1), shuffled"]
    assert list(table.columns)[:4] == [("T1", "als", "NDCG@100"), ("T1", "als", "Recall@100"),
                                       ("T1", "gsasrec", "NDCG@100"), ("T1", "gsasrec", "Recall@100")]
    assert ("T2", "gsasrec", "NDCG@100") not in table.columns  # never measured: no column
    marks = best(table)
    assert marks.at["on task (k=1)", ("T1", "als", "NDCG@100")] and marks.at[GENERAL, ("T1", "als", "Recall@100")]
    assert marks.sum().tolist() == [1] * len(table.columns)

    flat = to_csv_frame(results_from_runs(_runs()))
    assert flat.at["on task (k=1)", "T1/als/NDCG@100"] == 0.15
    assert flat.at["on task (k=1)", "T1/als/NDCG@100 change"] == pytest.approx(0.5)


def test_markdown_has_one_table_per_task_with_changes_and_the_best_in_bold():
    text = to_markdown(results_from_runs(_runs()))
    assert text.count("### ") == 2
    assert "| on task (k=1) | **0.1500 (+50.0%)** | 0.2000 (-50.0%) |" in text
    t2 = text.split("### T2")[1]
    assert "on task" not in t2  # no on-task model measured on T2: no row


def test_yambda_baselines_declares_paper_002s_table():
    config = load_config([EXPERIMENTS / "yambda-baselines.yaml"])
    families = [config.grid.models[name].family for name in config.grid.baselines.models]
    assert families == ["mostpop", "decaypop", "itemknn", "als", "bpr", "sasrec"]
    assert config.grid.baselines.feedbacks == ["listen_plus", "like"] and not config.grid.cells
    runs = plan_baselines(config.grid)
    assert len(runs) == 12
    # Classic families train on the test stage; SASRec on the validation stage, whose window picks its epoch.
    assert {r.protocol for r in runs[:10]} == {"gts_test_listen_plus", "gts_test_like"}
    assert [r.protocol for r in runs[10:]] == ["gts_val_listen_plus", "gts_val_like"]
    train = baseline_config(config, runs[9], 5).train
    assert (train.protocol, train.sequence, train.k, train.sequences_version, train.register) == (
        "gts_test_like", "lh_track", 1, 5, False)
    assert baseline_config(config, runs[9], 5).model.family == "bpr"
    assert baseline_config(config, runs[11], 5).train.protocol == "gts_val_like"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("grid.baselines.models=[nope]",), "'nope' is not a key of grid.models"),
        (("grid.baselines.models=[als, als]",), "must be distinct"),
        (("grid.baselines.models=[als]", "gts.feedbacks=[like]"), "['listen_plus'] not among gts.feedbacks"),
        (("grid.baselines.models=[als]", "evaluate.ks=[100]"), "must include both"),
    ],
)
def test_invalid_baselines_fail_naming_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _grid(*overrides)


def _baseline_runs() -> pd.DataFrame:
    def run(model, feedback, ndcg10, users):
        metrics = {f"metrics.test/next_track/{m}_at_{k}": ndcg10 * (i + 1) * (k / 10) ** 0.5
                   for i, m in enumerate(("ndcg", "recall", "coverage")) for k in (10, 100)}
        return {"tags.grid.model": model, "tags.grid.approach": BASELINE, "tags.grid.feedback": feedback,
                "params.training_sequence": "lh_track", "metrics.test/next_track/users_evaluated": users,
                "metrics.test/T1/ndcg_at_100": 0.9, **metrics}

    return pd.concat([_runs(), pd.DataFrame([
        run("mostpop", "listen_plus", 0.01, 90), run("ials", "listen_plus", 0.03, 90), run("ials", "like", 0.02, 40),
    ])], ignore_index=True)


def test_baseline_runs_make_their_own_table_and_stay_out_of_the_grids():
    runs = _baseline_runs()
    assert results_from_runs(runs).equals(results_from_runs(_runs()))  # the GTS's T1 metric is no grid row
    long = baseline_results(runs)
    assert len(long) == 3 * 6
    table = baseline_wide(long, "listen_plus")
    assert list(table.index) == ["mostpop", "ials"] and list(table.columns) == list(COLUMNS)
    assert table.at["ials", "Recall@100"] == pytest.approx(0.03 * 2 * 10 ** 0.5)
    text = baseline_markdown(long)
    assert "### Listen+ (90 users)" in text and "### Like (40 users)" in text
    assert text.count("**") == 2 * (6 + 6)  # the best of each column of each table in bold
