"""The contract every model family meets (models.md: one interface for every family).

Parametrised over the registry, so a family added to ``FAMILIES`` runs through it unchanged:
deterministic refit with the same seed, save → load gives identical scores, the config
round-trips (object → YAML → validated config → saved model), the family runs through
``musicrec evaluate`` on a toy lake, and the task's candidate filter applies to its rankings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from musicrec.arrays import Ragged
from musicrec.config import load_config
from musicrec.evaluate.protocols import _metric_name, rank_task
from musicrec.lake.readers import load_holdout, read_training_sequences
from musicrec.models import FAMILIES, family_class, fit_model, load_model
from musicrec.runner import run_verb
from toy_lake import write_toy_lake

# Small settings so the suite stays fast; any family not listed runs with its defaults.
SMALL: dict[str, list[str]] = {
    "als": ["model.factors=8", "model.iterations=3"],
    "bpr": ["model.factors=8", "model.iterations=5"],
    "itemknn": ["model.neighbours=10"],
    **{
        family: ["model.embedding_dim=16", "model.max_epochs=1", "model.max_len=20", "model.batch_size=32"]
        for family in ("sasrec", "gsasrec", "bert4rec")
    },
}


def family_config(family: str, *extra: str):
    return load_config(overrides=[f"model.family={family}", *SMALL.get(family, []), *extra])


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> str:
    return write_toy_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory) -> str:
    # One store for the module: creating an MLflow database costs seconds.
    return str(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def training(lake):
    return read_training_sequences(lake, "toy", "holdout", "lh_track", 1)


def fit(family: str, training, seed: int = 3):
    config = family_config(family).model
    return fit_model(
        f"{family}[lh_track]", family_class(family)(config, seed=seed), training.items, timestamps=training.timestamps
    )


def histories(n_items: int) -> Ragged:
    rng = np.random.default_rng(1)
    return Ragged.from_lists([rng.integers(0, n_items, size=n) for n in (0, 1, 4, 12)])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_refit_with_the_same_seed_is_identical(family, training):
    torch.set_num_threads(2)  # several threads is where accumulation order could differ
    a, b = fit(family, training), fit(family, training)
    state_a, state_b = a.model.state(), b.model.state()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert np.array_equal(state_a[key], state_b[key]), key
    h = histories(len(a.items))
    assert torch.equal(a.model.score(h), b.model.score(h))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_score_shape_and_save_load(family, training, tmp_path):
    fitted = fit(family, training)
    h = histories(len(fitted.items))
    scores = fitted.model.score(h)
    assert scores.shape == (len(h), len(fitted.items)) and scores.dtype == torch.float32
    loaded = load_model(fitted.save(tmp_path / "m"))
    assert torch.equal(loaded.model.score(h), scores)
    assert loaded.model.config == fitted.model.config
    emb = fitted.model.item_embeddings()
    if emb is not None:  # retrieval's contract: score = query · item
        q = fitted.model.query_embeddings(h)
        np.testing.assert_allclose(q @ emb.T, scores.numpy(), rtol=1e-5, atol=1e-6)
        assert np.array_equal(loaded.model.item_embeddings(), emb)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_config_round_trips(family, tmp_path):
    config = family_config(family).model
    cls = family_class(family)
    assert isinstance(config, cls.Config) and config.family == family
    dumped = tmp_path / "model.yaml"
    dumped.write_text(yaml.safe_dump({"model": config.model_dump(mode="json")}))
    assert load_config([dumped]).model == config
    assert cls.Config.model_validate(cls(config).config_dict()) == config


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_candidate_filters_apply(family, lake, training):
    fitted = fit(family, training)
    for ex in load_holdout(lake, "toy", "test", ("T1", "T2")):
        ranked = rank_task(fitted, ex, 10)
        for history, row in zip(ex.history.to_lists(), ranked, strict=True):
            row = row[row >= 0]
            if ex.task == "T1":  # discovery: never an item of the history
                assert not set(row) & set(history)
            else:  # familiar: only items of the history, every known one of them
                known = set(history) & set(fitted.items.ids)
                assert set(row) <= set(history) and len(row) == min(10, len(known))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_runs_through_evaluate_on_a_toy_lake(family, lake, training, mlflow_dir, tmp_path):
    # A saved model goes through `musicrec evaluate` (evaluate.model_uri), whatever trains it.
    folder = fit(family, training).save(tmp_path / "model")
    config = family_config(
        family,
        f"lake.root={lake}",
        "dataset.name=toy",
        f"mlflow.local_dir={mlflow_dir}",
        "evaluate.protocols=[holdout]",
        f"evaluate.model_uri={folder}",
        "evaluate.ks=[5,10]",
    )
    import matplotlib.pyplot as plt
    import mlflow

    open_figures = plt.get_fignums()
    metrics = mlflow.get_run(run_verb("evaluate", config)["mlflow_run"]).data.metrics
    assert plt.get_fignums() == open_figures  # the logged chart was closed
    for task in ("T1", "T2"):
        assert 0.0 <= metrics[f"all/test/{task}/ndcg_at_10"] <= 1.0
        assert f"all/test/{task}/recall_at_10" in metrics
    assert not any("/T3/" in m for m in metrics)  # a track model serves no artist task


@pytest.mark.parametrize("family", ["mostpop", "decaypop", "itemknn", "als", "bpr", "ease"])
def test_scorers_fit_general_and_on_task_in_evaluate(family, lake, mlflow_dir):
    config = family_config(
        family,
        f"lake.root={lake}",
        "dataset.name=toy",
        f"mlflow.local_dir={mlflow_dir}",
        "evaluate.protocols=[holdout]",
        f"evaluate.scorers=[{family}]",
        "evaluate.ks=[5,10]",
    )
    summary = run_verb("evaluate", config)
    import mlflow

    run = mlflow.get_run(summary["mlflow_run"])
    for model, tasks in ((f"{family}[lh_track]", "T1 T2"), (f"{family}[lh_artist]", "T3 T4")):
        for task in tasks.split():
            value = run.data.metrics[_metric_name(f"all/{model}/test/{task}/ndcg_at_10")]
            assert 0.0 <= value <= 1.0
    for on_task, task in (("disc_track", "T1"), ("fam_track", "T2"), ("disc_artist", "T3"), ("fam_artist", "T4")):
        assert _metric_name(f"all/{family}[{on_task}]/test/{task}/recall_at_10") in run.data.metrics
