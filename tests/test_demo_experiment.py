"""End to end: `musicrec pipeline` on the demo experiment (conf/experiments/demo.yaml) with the `tiny`
preset and tiny gSASRec settings, as a user runs it, plus the demo's ALS and gSASRec as GTS
baselines under Listen+ (the yambda-baselines experiment's kind of run; tiny has 19 likes, too few
for the Like setup's windows, whose table the unit tests check). The report's shape, its numbers
against the metrics the training runs logged in MLflow, and the registry's champions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from conftest import track_into
from musicrec.contract import HOLDOUT_TASKS
from musicrec.experiments.cells import BASELINE
from musicrec.experiments.table import GENERAL, METRICS
from musicrec.registry.names import CHAMPION, registered_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]
ROOT = Path(__file__).resolve().parents[1]
MUSICREC = str(Path(sys.executable).parent / "musicrec")
DATASET = "synthetic-tiny"
# A gSASRec small enough for the tiny preset: one epoch of seconds per run.
TINY_GSASREC = tuple(
    f"grid.models.gsasrec.{key}={value}"
    for key, value in {"embedding_dim": 16, "ffn_dim": 16, "num_blocks": 1, "max_len": 12, "batch_size": 32,
                       "negatives": 8, "max_epochs": 1}.items()
)
# The track tasks only: every cell kind still runs (general, on task, fine-tuned, shuffled), in half the runs.
TASKS = ("T1", "T2")
APPROACHES = {GENERAL, "on task (k=1)", "on task (k=1), shuffled", "fine-tuned on task (k=1)"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    overrides = [
        f"data.root={work / 'data'}", f"lake.root={work / 'lake'}", f"mlflow.local_dir={work / 'mlflow'}",
        f"report.output_dir={work / 'reports'}", f"train.storage_path={work / 'ray_results'}",
        "runtime.spark.master=local[2]", "runtime.spark.shuffle_partitions=4", "runtime.spark.driver_memory=2g",
        "runtime.progress=false", "runtime.ray.num_cpus=2", f"grid.tasks=[{','.join(TASKS)}]", "grid.baselines.models=[als, gsasrec]", "grid.baselines.feedbacks=[listen_plus]",
        # 20-day GTS windows: tiny's 30 users over 298 days leave one-day windows (nearly) empty.
        "gts.test_size=1728000", "gts.val_size=1728000", *TINY_GSASREC,
    ]
    proc = subprocess.run(
        [MUSICREC, "pipeline", "--config", str(ROOT / "conf/experiments/demo.yaml"),
         "--config", str(ROOT / "conf/datasets/synthetic-tiny.yaml"), *overrides],
        cwd=work, capture_output=True, text=True, timeout=3500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    track_into(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    (folder,) = (work / "reports").iterdir()
    return work, proc, folder


def _all_runs() -> pd.DataFrame:
    runs = mlflow.search_runs(experiment_names=[f"{DATASET}/demo"], filter_string="tags.`grid.model` != ''")
    assert len(runs) == 8 + 2  # the grid (below) and the two baselines
    return runs


def _training_runs() -> pd.DataFrame:
    runs = _all_runs()
    runs = runs[runs["tags.grid.approach"] != BASELINE]
    assert len(runs) == 8  # ALS 1 general (lh_track) + 2 on task; gSASRec the same + 2 fine-tuned
    return runs


def test_report_is_shaped_like_paper_000s_tables(demo):
    _, proc, folder = demo
    table = pd.read_csv(folder / "results.csv", index_col="approach")
    assert table.index[0] == GENERAL and set(table.index) <= APPROACHES
    assert {"on task (k=1)", "fine-tuned on task (k=1)", "on task (k=1), shuffled"} <= set(table.index)
    values = [c for c in table.columns if not c.endswith(" change")]
    assert all(f"{c} change" in table.columns for c in values)
    for column in values:
        task, model, metric = column.split("/")
        assert task in TASKS and model in {"als", "gsasrec"} and metric in {m for _, m in METRICS}
    assert table[[c for c in table.columns if c.endswith(" change")]].loc[GENERAL].isna().all()
    assert {f"bars_{task}.png" for task in {c.split("/")[0] for c in values}} <= {p.name for p in folder.iterdir()}
    assert (folder / "training_curves.png").stat().st_size > 0
    markdown = (folder / "report.md").read_text()
    assert "### T1" in markdown and "**" in markdown
    assert "champion per task:" in proc.stdout and "MLflow UI:" in proc.stdout


def test_report_numbers_are_the_logged_metrics(demo):
    _, _, folder = demo
    runs = _training_runs()
    long = pd.read_csv(folder / "results_long.csv", float_precision="round_trip")  # exact, as written
    assert len(long)
    names = {column: name for name, column in METRICS}
    for row in long.itertuples(index=False):
        shuffled = row.approach.endswith(", shuffled")
        approach = row.approach.removesuffix(", shuffled")
        run = runs[(runs["tags.grid.model"] == row.model) & (runs["tags.grid.approach"] == approach)]
        key = f"metrics.test/{row.task}/{'shuffled/' if shuffled else ''}{names[row.metric]}"
        logged = run[key].dropna()
        assert len(logged) == 1, (row, key)
        assert row.value == logged.iloc[0]


def test_baselines_table_is_the_gts_runs_logged_metrics(demo):
    _, proc, folder = demo
    runs = _all_runs()
    runs = runs[runs["tags.grid.approach"] == BASELINE].set_index(["tags.grid.model", "tags.grid.feedback"])
    # ALS trains on the test stage; gSASRec on the validation stage, whose window picked its epoch.
    assert runs["params.protocol"].to_dict() == {
        ("als", "listen_plus"): "gts_test_listen_plus", ("gsasrec", "listen_plus"): "gts_val_listen_plus"}
    assert runs.loc["gsasrec", "metrics.epochs_trained"].ge(1).all()
    table = pd.read_csv(folder / "baselines.csv", float_precision="round_trip")
    assert len(table) == 2 * 6  # models x NDCG, Recall, Coverage @10 and @100
    for row in table.itertuples(index=False):
        name, k = row.metric.split("@")
        assert row.value == runs.at[(row.model, row.feedback), f"metrics.test/next_track/{name.lower()}_at_{k}"]
        assert row.users == runs.at[(row.model, row.feedback), "metrics.test/next_track/users_evaluated"] > 0
    # Both stages are tested on the same users: the test window's.
    assert table["users"].nunique() == 1
    assert "# Baselines (global temporal split" in (folder / "report.md").read_text()
    assert "### Listen+" in proc.stdout
    # Not registered: champions are compared on holdout validation users.
    client = mlflow.MlflowClient()
    registered = {v.tags.get("training_run", v.run_id) for v in client.search_model_versions()}
    assert registered and not registered & set(runs.run_id)


def test_training_history_is_each_sequential_runs_logged_epochs(demo):
    _, _, folder = demo
    history = pd.read_csv(folder / "training_history.csv", float_precision="round_trip")
    runs = _all_runs()
    sequential = runs[runs["params.family"] == "gsasrec"]
    assert history["run"].nunique() == len(sequential) == 5 + 1  # general, on task x2, fine-tuned x2, baseline
    client = mlflow.MlflowClient()
    for _, run in sequential.iterrows():
        label = f"gsasrec, {run['tags.grid.approach']}, {run['params.training_sequence']}"
        if run["tags.grid.approach"] == BASELINE:
            label += f", {run['tags.grid.feedback']}"
        rows = history[history["run"] == label].sort_values("epoch")
        assert len(rows) == run["metrics.epochs_trained"]
        logged = client.get_metric_history(run.run_id, f"val/{run['params.task']}/ndcg_at_100")
        assert sorted((m.step, m.value) for m in logged) == list(zip(rows["epoch"], rows["val_ndcg"], strict=True))


def test_report_is_logged_to_the_pipeline_run(demo):
    (pipeline,) = mlflow.search_runs(experiment_names=[f"{DATASET}/demo"],
                                     filter_string="attributes.run_name = 'pipeline'").run_id
    logged = {f.path for f in mlflow.MlflowClient().list_artifacts(pipeline, "report")}
    assert {"report/report.md", "report/results.csv"} <= logged


def test_registry_has_a_champion_for_each_task_a_model_was_validated_on(demo):
    runs = _training_runs()
    client = mlflow.MlflowClient()
    for task in TASKS:
        validated = runs[runs[f"metrics.val/{task}/ndcg_at_100"].notna()]
        assert len(validated), task
        for family in set(validated["params.family"]):
            version = client.get_model_version_by_alias(registered_name(DATASET, task, family), CHAMPION)
            assert version.tags["training_run"] in set(validated.run_id)
    assert not any(f"metrics.val/{task}/ndcg_at_100" in runs for task in set(HOLDOUT_TASKS) - set(TASKS))


def test_ray_trains_quietly_and_its_placement_group_cleaner_can_watch_the_runs(demo):
    """The grid starts Ray with its dashboard: without the State API behind it, Ray Train's
    placement-group cleaner cannot see a run's controller and says so once a second, every run."""
    _, proc, _ = demo
    output = proc.stdout + proc.stderr
    assert output.count("Started training worker group") >= 5  # the gSASRec runs' controllers did speak
    assert "Failed to query Ray Train Controller actor state" not in output
