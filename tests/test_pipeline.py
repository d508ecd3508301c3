"""End to end: the real `musicrec pipeline` (generate -> ingest -> preprocess -> evaluate) as a user runs it,
then `musicrec score` on predictions exported from the lake. Real Spark, Delta, delta-rs and MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import track_into
from musicrec.data.generator import GeneratorParams, generate
from musicrec.evaluate.protocols import predictions
from musicrec.lake.provenance import written_by
from musicrec.lake.readers import load_holdout, table_version, train_sequences
from musicrec.models import fit_model
from musicrec.models.transition import Transition

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
MUSICREC = str(Path(sys.executable).parent / "musicrec")
# Enough users and history for the synthetic data's sequential structure to show, small enough for CI.
PARAMS = GeneratorParams(name="e2e", n_users=400, n_items=3000, median_history=120, n_artists=300, n_genres=6,
                         chunk_users=200, seed=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    generate(PARAMS, work / "data", progress=False)
    overrides = [
        f"data.root={work / 'data'}", "data.size=e2e", "dataset.name=e2e",
        f"lake.root={work / 'lake'}", f"mlflow.local_dir={work / 'mlflow'}",
        "preprocess.popularity.min_users=2", "holdout.gt_size=5", "holdout.split_ratios=[0.5,0.25,0.25]",
        "evaluate.shuffle=true", "evaluate.ks=[10,100]", "runtime.log_level=WARNING",
    ]
    proc = subprocess.run(
        [MUSICREC, "pipeline", "--config", str(ROOT / "conf/experiments/smoke.yaml"), *overrides],
        cwd=work, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return work, proc


def _use_pipeline_store(work: Path) -> None:
    """Read the pipeline's own MLflow store (reset after the test)."""
    track_into(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")


def _results(work: Path) -> pd.DataFrame:
    """The pipeline's ``evaluation/results.csv``, as logged to its evaluate run."""
    _use_pipeline_store(work)
    parent = mlflow.search_runs(experiment_names=["e2e/smoke"], filter_string="attributes.run_name = 'evaluate'")
    assert len(parent) == 1
    path = mlflow.artifacts.download_artifacts(run_id=parent.run_id[0], artifact_path="evaluation/results.csv")
    return pd.read_csv(path)


def _row(df, model, task, variant="full", protocol="holdout", metric="ndcg", k=100) -> pd.Series:
    row = df[(df.model == model) & (df.task == task) & (df.variant == variant) & (df.protocol == protocol)
             & (df.metric == metric) & (df.k == k)]
    assert len(row) == 1, (model, task, variant)
    return row.iloc[0]


def _value(df, model, task, variant="full", protocol="holdout", metric="ndcg", k=100) -> float:
    return float(_row(df, model, task, variant, protocol, metric, k).value)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_pipeline_writes_every_table_and_a_summary(run):
    work, proc = run
    for table in ("events", "quarantine", "stats", "sequences", "user_splits", "holdout_examples", "gts_examples"):
        assert (work / "lake" / "e2e" / table / "_delta_log").is_dir(), table
    assert "mlflow_ui:" in proc.stdout and "On-task vs general" in proc.stdout


def test_evaluate_run_records_lineage_and_artifacts(run):
    work, _ = run
    _use_pipeline_store(work)
    runs = mlflow.search_runs(experiment_names=["e2e/smoke"])
    parent = runs[runs["tags.mlflow.runName"] == "evaluate"].iloc[0]
    assert parent["params.table_version.sequences"] == "0"
    # The commit of this checkout, marked dirty exactly when git sees local changes.
    commit, _, dirty = parent["tags.git_commit"].partition("+")
    assert commit == _git("rev-parse", "HEAD")
    assert dirty == ("dirty" if _git("status", "--porcelain") else "")
    children = runs[runs["tags.mlflow.parentRunId"] == parent.run_id]
    assert {"mostpop", "transition"} == set(children["params.family"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.run_id, "evaluation")}
    assert {"evaluation/results.csv", "evaluation/ndcg.png", "evaluation/on_task_vs_general.csv"} <= artifacts


def test_a_sequences_version_leads_to_the_preprocess_run_of_the_pipeline(run):
    """Lineage: the commit of a `sequences` version names the run that wrote it and that run's config."""
    work, _ = run
    path = str(work / "lake" / "e2e" / "sequences")
    meta = written_by(path, table_version(path))
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    prep = mlflow.get_run(meta["mlflow_run_id"])
    assert prep.info.run_name == "preprocess" and prep.data.tags["config_hash"] == meta["config_hash"]
    # The value the lake was built with: the tiny dataset's, as the pipeline resolved it.
    assert prep.data.params["preprocess.popularity.recent_window"] == "175"
    saved = mlflow.artifacts.download_artifacts(run_id=prep.info.run_id, artifact_path="config.yaml")
    assert yaml.safe_load(Path(saved).read_text())["preprocess"]["popularity"]["min_users"] == 2  # an override
    pipeline = mlflow.get_run(prep.data.tags["mlflow.parentRunId"])
    assert pipeline.info.run_name == "pipeline" and pipeline.info.status == "FINISHED"


def test_transition_beats_popularity_and_shuffling_hurts_it(run):
    df = _results(run[0])
    for task in ("T1", "T2"):
        assert _value(df, "transition[lh_track]", task) > _value(df, "mostpop[lh_track]", task)
    # Shuffling the input changes nothing for popularity and hurts the order-aware model.
    assert _value(df, "mostpop[lh_track]", "T1", "shuffle_change") == 0
    assert _value(df, "transition[lh_track]", "T1", "shuffle_change") < -0.1


def test_score_cli_gives_back_the_evaluation_metrics(run, tmp_path):
    work, _ = run
    lake = str(work / "lake")
    model = fit_model("transition[lh_track]", Transition(), train_sequences(lake, "e2e", "holdout", "lh_track", 1),
                      tasks=("T1", "T2"))
    examples = load_holdout(lake, "e2e", "test", ("T1", "T2"))
    preds = predictions(model, examples, k=100)
    pq.write_table(pa.table({"uid": pa.array(preds["uid"].to_numpy().astype("int32")), "task": preds["task"],
                             "items": preds["items"].cast(pa.list_(pa.int32()))}), tmp_path / "p.parquet")
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [MUSICREC, "score", "--predictions", str(tmp_path / "p.parquet"), "--examples", "holdout", "--lake", lake,
         "--dataset", "e2e", "--k", "10,100", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = json.loads(out.read_text())
    # What the pipeline itself measured for the same model: its results.csv artifact in MLflow.
    expected = _results(work)
    expected = expected[expected.split == "test"]
    for task in ("T1", "T2"):
        for metric in ("ndcg", "recall", "hr", "map", "mrr", "precision"):
            for k in (10, 100):
                want = _value(expected, "transition[lh_track]", task, metric=metric, k=k)
                assert scored[task][f"{metric}@{k}"] == pytest.approx(want, abs=1e-12)
        assert scored[task]["users_evaluated"] == int(_row(expected, "transition[lh_track]", task).users_evaluated)


def test_score_cli_rejects_bad_predictions_clearly(run, tmp_path):
    work, _ = run
    pq.write_table(pa.table({"uid": [1], "items": [[1, 2]]}), tmp_path / "bad.parquet")
    proc = subprocess.run(
        [MUSICREC, "score", "--predictions", str(tmp_path / "bad.parquet"), "--examples", "holdout",
         "--lake", str(work / "lake"), "--dataset", "e2e"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "task" in proc.stderr and "Traceback" not in proc.stderr
