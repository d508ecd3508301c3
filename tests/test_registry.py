"""The model registry: ``<dataset>.<task>.<family>`` versions registered once per training run,
``promote`` moving ``champion`` to the best version within one data version, and the registered
model served as a pyfunc in a fresh process without pyspark, equal to the evaluator's rankings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
import torch
from deltalake import write_deltalake

from musicrec.cli import main
from musicrec.config import load_config
from musicrec.evaluate.protocols import _metric_name, model_inputs, rank_task
from musicrec.lake.readers import load_holdout, load_table
from musicrec.models import load_model
from musicrec.runner import run_verb
from musicrec.runtime.mlflow_setup import setup_mlflow, tracking_uri
from toy_lake import write_toy_lake

REPO = Path(__file__).resolve().parents[1]
ALS = ("model.family=als", "model.factors=8", "model.iterations=3", "train.sequence=lh_track")


def settings(lake: str, mlflow_dir: Path, dataset: str = "toy", *extra: str) -> list[str]:
    return [
        f"lake.root={lake}",
        f"dataset.name={dataset}",
        f"mlflow.local_dir={mlflow_dir}",
        "runtime.ray.num_cpus=1",
        "evaluate.ks=[5,10]",
        "register.k=10",
        "runtime.progress=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_local):
    """ALS on lh_track (it serves T1 and T2), trained with train.register=true, T1 and T2 promoted."""
    root = tmp_path_factory.mktemp("registry")
    lake = write_toy_lake(root / "lake")
    overrides = settings(lake, root / "mlflow", "toy", *ALS, "train.register=true")
    summary = run_verb("train", load_config(overrides=overrides))
    for task in ("T1", "T2"):
        run_verb(
            "promote",
            load_config(
                overrides=settings(
                    lake,
                    root / "mlflow",
                    "toy",
                    f"promote.task={task}",
                    "promote.family=als",
                    "promote.metric=ndcg_at_10",
                )
            ),
        )
    return {"lake": lake, "mlflow": root / "mlflow", "summary": summary, "root": root}


def client_for(lake: str, mlflow_dir: Path, dataset: str = "toy") -> mlflow.MlflowClient:
    setup_mlflow(load_config(overrides=settings(lake, mlflow_dir, dataset)))
    return mlflow.MlflowClient()


@pytest.mark.ray
def test_registering_a_run_twice_gives_one_version_tagged_with_its_lineage(trained, capsys):
    lake, mlflow_dir, summary = trained["lake"], trained["mlflow"], trained["summary"]
    run_id = summary["training_run"]
    first = {r["name"]: r for r in summary["registered"]}
    assert set(first) == {"toy.T1.als", "toy.T2.als"} and all(r["new"] for r in first.values())

    again = run_verb(
        "register", load_config(overrides=settings(lake, mlflow_dir, "toy", f"register.run_id={run_id}"))
    )
    assert {r["name"]: (r["version"], r["new"]) for r in again["registered"]} == {
        name: (r["version"], False) for name, r in first.items()
    }
    # A task the model does not serve, and a run that is not a training run: one line each.
    base = settings(lake, mlflow_dir, "toy")
    for extra, text in (
        ((f"register.run_id={run_id}", "register.tasks=[T1,T3]"), "does not serve T3"),
        ((f"register.run_id={summary['mlflow_run']}",), "is not a training run"),
    ):
        assert main(["register", *base, *extra]) == 1
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1, err
    client = client_for(lake, mlflow_dir)
    run = client.get_run(run_id)
    for task in ("T1", "T2"):
        versions = client.search_model_versions(f"name='toy.{task}.als'")
        assert len(versions) == 1
        version = versions[0]
        assert version.run_id == run_id
        tags = version.tags
        assert (tags["task"], tags["family"], tags["training_sequence"], tags["k"]) == (
            task,
            "als",
            "lh_track",
            "1",
        )
        assert (tags["table_version.sequences"], tags["table_version.holdout_examples"]) == ("0", "0")
        assert tags["data_versions"] == "holdout_examples=0,sequences=0"
        # The validation values are the training run's, metric by metric.
        for name in ("ndcg_at_10", "recall_at_5", "hr_at_10"):
            assert float(tags[f"val/{name}"]) == run.data.metrics[f"val/{task}/{name}"]
        assert {k: int(v) for k, v in client.get_registered_model(f"toy.{task}.als").aliases.items()} == {
            "champion": int(version.version)
        }


@pytest.mark.ray
def test_promote_picks_the_best_version_and_refuses_other_data_unless_forced(tmp_path, ray_local, capsys):
    lake = write_toy_lake(tmp_path / "lake", dataset="promo")
    mlflow_dir = tmp_path / "mlflow"

    def train(*extra: str) -> str:
        overrides = settings(
            lake,
            mlflow_dir,
            "promo",
            "model.family=als",
            "model.factors=4",
            "train.sequence=disc_track",
            *extra,
        )
        run_id = run_verb("train", load_config(overrides=overrides))["training_run"]
        run_verb(
            "register",
            load_config(overrides=settings(lake, mlflow_dir, "promo", f"register.run_id={run_id}")),
        )
        return run_id

    def promote(*extra: str) -> dict:
        return run_verb(
            "promote",
            load_config(
                overrides=settings(
                    lake,
                    mlflow_dir,
                    "promo",
                    "promote.task=T1",
                    "promote.family=als",
                    "promote.metric=ndcg_at_10",
                    *extra,
                )
            ),
        )

    runs = [
        train("model.iterations=1", "seed=1"),
        train("model.iterations=4", "seed=2"),
        train("model.iterations=2", "seed=3"),
    ]
    client = client_for(lake, mlflow_dir, "promo")
    # An on-task (disc_track) model serves T1 only: one registered name, one version per run.
    versions = {v.run_id: int(v.version) for v in client.search_model_versions("name='promo.T1.als'")}
    assert set(versions) == set(runs) and not client.search_model_versions("name='promo.T2.als'")
    ndcg = {run: client.get_run(run).data.metrics["val/T1/ndcg_at_10"] for run in runs}
    best = max(runs, key=lambda run: (ndcg[run], -versions[run]))
    assert len(set(ndcg.values())) > 1  # the settings differ enough for the choice to matter

    promoted = promote()
    assert promoted["champion"] == versions[best] and promoted["previous"] is None
    assert promoted["value"] == ndcg[best]
    assert int(client.get_registered_model("promo.T1.als").aliases["champion"]) == versions[best]
    assert promote()["champion"] == versions[best]  # promoting again changes nothing

    # New data: a version trained and validated on it is not comparable with the champion.
    examples = load_table(lake, "promo", "holdout_examples")
    write_deltalake(f"{lake}/promo/holdout_examples", examples, mode="overwrite", partition_by=["task"])
    newer = train("model.iterations=3", "seed=4")
    newer_version = {v.run_id: int(v.version) for v in client.search_model_versions("name='promo.T1.als'")}[
        newer
    ]
    tags = client.get_model_version("promo.T1.als", str(newer_version)).tags
    assert tags["data_versions"] == "holdout_examples=1,sequences=0"

    code = main(
        [
            "promote",
            *settings(
                lake,
                mlflow_dir,
                "promo",
                "promote.task=T1",
                "promote.family=als",
                f"promote.version={newer_version}",
            ),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "not comparable" in err and "holdout_examples=1" in err and "Traceback" not in err
    assert int(client.get_registered_model("promo.T1.als").aliases["champion"]) == versions[best]

    forced = promote(f"promote.version={newer_version}", "promote.force=true")
    assert forced["champion"] == newer_version and forced["previous"] == versions[best]
    assert int(client.get_registered_model("promo.T1.als").aliases["champion"]) == newer_version


SERVE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoPyspark(importlib.abc.MetaPathFinder):
        # A serving environment without pyspark: MLflow imports it only if installed, and this
        # install has it, so any import of it here fails as it would there.
        def find_spec(self, name, path=None, target=None):
            if name == "pyspark" or name.startswith("pyspark."):
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoPyspark())
    import mlflow
    import pandas as pd

    uri, inputs, output = sys.argv[1:]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    out = {}
    for task, histories in json.loads(open(inputs).read()).items():
        model = mlflow.pyfunc.load_model(f"models:/toy.{task}.als@champion")
        params = {"k": 5} if task == "T2" else None
        out[task] = model.predict(pd.DataFrame({"history": histories}), params=params).to_dict(orient="list")
    out["pyspark_imported"] = "pyspark" in sys.modules
    out["ray_imported"] = "ray" in sys.modules
    open(output, "w").write(json.dumps(out))
    """
)


@pytest.mark.ray
@pytest.mark.integration
def test_champion_served_in_a_fresh_process_without_pyspark_equals_the_evaluator(trained, tmp_path):
    lake, mlflow_dir = trained["lake"], trained["mlflow"]
    fitted = load_model(
        mlflow.artifacts.download_artifacts(
            run_id=trained["summary"]["training_run"],
            artifact_path="model",
            dst_path=str(tmp_path / "saved"),
            tracking_uri=tracking_uri(load_config(overrides=settings(lake, mlflow_dir))),
        )
    )
    examples = {ex.task: ex for ex in load_holdout(lake, "toy", "test", ["T1", "T2"])}
    histories = {task: [ex.history[i].tolist() for i in range(len(ex.uids))] for task, ex in examples.items()}
    (tmp_path / "in.json").write_text(json.dumps(histories))
    (tmp_path / "serve.py").write_text(SERVE)
    uri = tracking_uri(load_config(overrides=settings(lake, mlflow_dir)))
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    done = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "serve.py"),
            uri,
            str(tmp_path / "in.json"),
            str(tmp_path / "out.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads((tmp_path / "out.json").read_text())
    assert served["pyspark_imported"] is False and served["ray_imported"] is False

    for task, k in (("T1", 10), ("T2", 5)):  # T1 at the registered K, T2 at the K of the call's params
        ex = examples[task]
        expected = rank_task(fitted, ex, k)
        got = served[task]["items"]
        assert len(got) == len(ex.uids) > 0
        inputs = model_inputs(fitted, ex.history)
        scores = fitted.model.score(inputs)
        for i, items in enumerate(got):
            assert items == expected[i][expected[i] >= 0].tolist()
            history = set(ex.history[i].tolist())
            # The task's filter, checked directly: T1 discovers (nothing heard), T2 only what was heard.
            assert not history & set(items) if task == "T1" else set(items) <= history
            dense = torch.from_numpy(fitted.items.to_dense(np.array(items, dtype=np.int64)))
            assert np.allclose(served[task]["scores"][i], scores[i, dense].numpy(), rtol=1e-5)
            assert served[task]["scores"][i] == sorted(served[task]["scores"][i], reverse=True)
            # A familiar list holds every known history item up to K (a discovery list is always K long here).
            known = int((np.unique(fitted.items.to_dense(ex.history[i])) >= 0).sum())
            assert len(items) == (min(k, known) if task == "T2" else k)


@pytest.mark.ray
def test_evaluate_a_registered_champion_on_its_task(trained):
    lake, mlflow_dir, summary = trained["lake"], trained["mlflow"], trained["summary"]
    evaluated = run_verb(
        "evaluate",
        load_config(
            overrides=settings(
                lake,
                mlflow_dir,
                "toy",
                "evaluate.protocols=[holdout]",
                "evaluate.model_uri=models:/toy.T1.als@champion",
            )
        ),
    )
    metrics = mlflow.get_run(evaluated["mlflow_run"]).data.metrics
    train_metrics = mlflow.get_run(summary["training_run"]).data.metrics
    assert metrics[_metric_name("all/test/T1/ndcg_at_10")] == train_metrics["test/T1/ndcg_at_10"]
    assert not any("/T2/" in name for name in metrics)  # the registered model is T1's


def test_register_and_promote_errors_are_one_line(tmp_path, capsys):
    base = settings(str(tmp_path / "lake"), tmp_path / "mlflow")
    for argv, code, text in (
        (["register", *base], 2, "register.run_id"),
        (["register", *base, "register.run_id=0123456789abcdef0123456789abcdef"], 1, "no such run"),
        (["register", *base, "register.tasks=[T9]"], 2, "T9"),
        (["promote", *base, "promote.task=T1"], 2, "promote.family"),
        (["promote", *base, "promote.task=T1", "promote.family=als"], 1, "no registered model toy.T1.als"),
    ):
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # A user error leaves no run behind.
    setup_mlflow(load_config(overrides=base))
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.ray
@pytest.mark.integration
def test_the_platforms_mlflow_server_answers_the_registry_rest_api_and_stops(trained):
    import socket
    import urllib.parse
    import urllib.request

    from musicrec.runtime.mlflow_server import local_server

    config = load_config(overrides=settings(trained["lake"], trained["mlflow"]))

    def get(url: str, path: str, **query: str) -> dict:
        with urllib.request.urlopen(
            f"{url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}", timeout=30
        ) as r:
            return json.loads(r.read())

    with local_server(config) as url:
        port = int(url.rsplit(":", 1)[1])
        assert url.startswith("http://127.0.0.1:")
        listeners = [
            c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port
        ]
        assert [c.laddr.ip for c in listeners] == ["127.0.0.1"]
        group = os.getpgid(listeners[0].pid)
        assert group != os.getpgid(0)  # the server runs in a process group of its own
        found = get(url, "registered-models/search", filter="name LIKE 'toy.%'")["registered_models"]
        assert sorted(m["name"] for m in found) == ["toy.T1.als", "toy.T2.als"]
        assert all({a["alias"] for a in m["aliases"]} == {"champion"} for m in found)
        champion = get(url, "registered-models/alias", name="toy.T1.als", alias="champion")["model_version"]
        assert champion["run_id"] == trained["summary"]["training_run"]
        assert {t["key"]: t["value"] for t in champion["tags"]}["task"] == "T1"
        # The MLflow client through the server sees the same store.
        through = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
        assert through.get_model_version_by_alias("toy.T2.als", "champion").tags["task"] == "T2"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # nothing listens on the port any more
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)  # and no process of the server is left
