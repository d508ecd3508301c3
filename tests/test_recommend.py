"""``musicrec recommend``: a registered champion's and a training run's top-K per holdout user and task
in the ``recommendations`` table, equal to the evaluator's lists; re-running it changes nothing, a
failed run leaves the table as it was, delta-rs and Spark read the same rows, and every version
leads back to its MLflow run. Also the registered model evaluated through ``jobs/evaluate.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from musicrec.cli import main
from musicrec.config import load_config
from musicrec.evaluate.job import load_trained
from musicrec.evaluate.protocols import rank_task, recommend
from musicrec.lake import delta, manifest
from musicrec.lake.provenance import written_by
from musicrec.lake.readers import load_holdout, read_arrow, table_version
from musicrec.lake.tables import table_path
from musicrec.runner import run_verb
from musicrec.runtime.mlflow_setup import setup_mlflow
from musicrec.tracking.runs import config_hash
from toy_lake import write_toy_lake

REPO = Path(__file__).resolve().parents[1]
ALS = ("model.family=als", "model.factors=8", "model.iterations=3")
CHAMPION = "models:/toy.T1.als@champion"


def settings(root: Path, *extra: str) -> list[str]:
    return [
        f"lake.root={root / 'lake'}",
        "dataset.name=toy",
        f"mlflow.local_dir={root / 'mlflow'}",
        "runtime.ray.num_cpus=1",
        "runtime.spark.master=local[2]",
        "runtime.spark.shuffle_partitions=2",
        "runtime.progress=false",
        "evaluate.ks=[5,10]",
        "recommend.k=10",
        *extra,
    ]


@pytest.fixture(scope="module")
def models(tmp_path_factory, ray_local):
    """The toy lake (published, as preprocess publishes it), ALS on tracks registered and promoted to
    T1's champion, and ALS on artists (a training run only)."""
    root = tmp_path_factory.mktemp("recommend")
    lake = write_toy_lake(root / "lake")
    dataset_dir = f"{lake}/toy"
    inputs = {t: DeltaTable(f"{dataset_dir}/{t}").version() for t in ("sequences", "holdout_examples")}
    manifest.publish(dataset_dir, inputs, read_version=None, job="toy", run_id="toy")
    track = run_verb("train", load_config(overrides=settings(root, *ALS, "train.sequence=lh_track", "train.register=true")))
    run_verb(
        "promote",
        load_config(overrides=settings(root, "promote.task=T1", "promote.family=als", "promote.metric=ndcg_at_10")),
    )
    artist = run_verb("train", load_config(overrides=settings(root, *ALS, "train.sequence=lh_artist")))
    return {"root": root, "track_run": track["training_run"], "artist_run": artist["training_run"]}


def recommend_with(models, spark, *extra: str) -> dict:
    return run_verb("recommend", load_config(overrides=settings(models["root"], *extra)), spark)


def rows_of(table, model: str) -> dict[tuple[int, str], tuple[list[int], list[float]]]:
    return {
        (r["uid"], r["task"]): (r["items"], r["scores"])
        for r in table.to_pylist()
        if r["model"] == model
    }


def assert_equals_the_evaluator(rows, fitted, lake: str, tasks: tuple[str, ...]) -> None:
    expected = 0
    for ex in load_holdout(lake, "toy", "test", tasks):
        items, scores = recommend(fitted, ex.history, ex.task, 10)
        np.testing.assert_array_equal(items, rank_task(fitted, ex, 10))
        for i, uid in enumerate(ex.uids):
            got_items, got_scores = rows[(int(uid), ex.task)]
            kept = items[i] >= 0
            assert got_items == items[i][kept].tolist()
            np.testing.assert_allclose(got_scores, scores[i][kept], rtol=1e-5, atol=1e-6)
            expected += 1
    assert len(rows) == expected > 0


@pytest.mark.ray
def test_a_champions_recommendations_are_the_evaluators_and_a_rerun_changes_nothing(models, spark):
    root = models["root"]
    lake = str(root / "lake")
    path = table_path(lake, "toy", "recommendations")
    # The index was logged with the training run, and recommend searched that one.
    setup_mlflow(load_config(overrides=settings(root)))
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(models["track_run"], "index")]
    assert sorted(logged) == ["index/index.json", "index/items.faiss"]

    first = recommend_with(models, spark, f"recommend.model={CHAMPION}")
    assert first["tasks"] == ["T1"]
    table = read_arrow(path)
    fitted = load_trained(CHAMPION)
    assert_equals_the_evaluator(rows_of(table, CHAMPION), fitted, lake, ("T1",))
    run = mlflow.get_run(first["mlflow_run"])
    assert run.data.params["model_run"] == models["track_run"] and run.data.params["model_version"] == "1"
    assert "kind=exact" in run.data.params["index"]
    meta = written_by(path, first["version"])
    config = load_config(overrides=settings(root, f"recommend.model={CHAMPION}"))
    assert meta["mlflow_run_id"] == first["mlflow_run"] and meta["config_hash"] == config_hash(config)
    assert (meta["model_run"], meta["model_version"]) == (models["track_run"], "1")

    second = recommend_with(models, spark, f"recommend.model={CHAMPION}")
    assert second["version"] == first["version"] + 1
    again = read_arrow(path)
    assert again.sort_by([("task", "ascending"), ("uid", "ascending")]).equals(
        table.sort_by([("task", "ascending"), ("uid", "ascending")])
    )
    # Spark reads the same rows as delta-rs.
    from_spark = delta.read_table(spark, path).toPandas()
    assert sorted(zip(from_spark["uid"], from_spark["task"], from_spark["items"].map(list), strict=True)) == sorted(
        zip(again["uid"].to_pylist(), again["task"].to_pylist(), again["items"].to_pylist(), strict=True)
    )


@pytest.mark.ray
def test_a_second_model_adds_its_rows_and_a_failed_run_leaves_the_table_as_it_was(models, spark, monkeypatch):
    root = models["root"]
    lake = str(root / "lake")
    path = table_path(lake, "toy", "recommendations")
    artist_label = f"runs:/{models['artist_run']}/model"
    # A run id as given on the command line; every task the model serves (T3, T4).
    summary = recommend_with(models, spark, f"recommend.model={models['artist_run']}")
    assert summary["model"] == artist_label and summary["tasks"] == ["T3", "T4"]
    table = read_arrow(path)
    assert_equals_the_evaluator(rows_of(table, artist_label), load_trained(models["artist_run"]), lake, ("T3", "T4"))
    order = [("model", "ascending"), ("task", "ascending"), ("uid", "ascending")]
    before, version = table.sort_by(order), table_version(path)

    def die(*args, **kwargs):
        raise RuntimeError("killed between the table's commit and the snapshot")

    # A run that dies after writing its Delta version but before publishing it.
    monkeypatch.setattr(manifest, "publish", die)
    with pytest.raises(RuntimeError, match="killed"):
        recommend_with(models, spark, "recommend.model=models:/toy.T2.als/1", "recommend.k=3")
    monkeypatch.undo()
    assert table_version(path) == version and DeltaTable(path).version() > version
    assert read_arrow(path).sort_by(order).equals(before)
    assert delta.read_table(spark, path).count() == before.num_rows
    # The next run builds on the published version, not on the failed one; the other models' rows stay.
    recommend_with(models, spark, "recommend.model=models:/toy.T2.als/1", "recommend.k=3")
    after = read_arrow(path)
    t2 = [items for model, items in zip(after["model"].to_pylist(), after["items"].to_pylist(), strict=True)
          if model == "models:/toy.T2.als/1"]
    assert t2 and max(len(items) for items in t2) == 3
    others = after.filter(pc.not_equal(after["model"], "models:/toy.T2.als/1")).sort_by(order)
    assert others.equals(before)


@pytest.mark.ray
def test_recommend_errors_are_one_line(models, spark, capsys):
    root = models["root"]
    assert main(["recommend", *settings(root)]) == 2
    assert main(["recommend", *settings(root), "--model", "models:/toy.T1.als@nobody"]) != 0
    assert main(["recommend", *settings(root), f"recommend.model={models['artist_run']}", "recommend.tasks=[T1]"]) != 0
    err = capsys.readouterr().err
    assert "recommend needs a model" in err and "no such registered model version" in err
    assert "does not serve T1" in err and "Traceback" not in err


@pytest.mark.ray
@pytest.mark.integration
def test_jobs_evaluate_scores_a_registered_champion(models):
    root = models["root"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    done = subprocess.run(
        [sys.executable, "jobs/evaluate.py", *settings(root, "evaluate.protocols=[holdout]", f"evaluate.model_uri={CHAMPION}")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    setup_mlflow(load_config(overrides=settings(root)))
    training = mlflow.get_run(models["track_run"]).data.metrics
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="attributes.run_name = 'evaluate'", output_format="list")
    metrics = runs[0].data.metrics
    assert metrics["all/test/T1/ndcg_at_10"] == training["test/T1/ndcg_at_10"]
