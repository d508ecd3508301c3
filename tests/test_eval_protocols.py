"""Protocol runners on tiny Delta tables, the ablations, external predictions and MLflow logging."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from deltalake import write_deltalake

from musicrec.arrays import Ragged
from musicrec.contract import SEQUENCE_NAMES
from musicrec.evaluate.external import score_examples, score_predictions
from musicrec.evaluate.protocols import (
    EvalOptions,
    _sample_negatives,
    evaluate,
    evaluate_gts,
    evaluate_holdout,
    format_results,
    log_results,
    model_inputs,
    predictions,
    shuffled,
)
from musicrec.lake.readers import TaskExamples, load_gts, load_holdout, train_sequences
from musicrec.models import ItemIndex, Model, fit_model
from musicrec.models.mostpop import MostPop
from musicrec.models.transition import Transition
from musicrec.prep.sequences import derive_items

L3 = math.log2(3)
IDCG3 = 1 + 1 / L3 + 1 / 2
DS = "toy"
# Raw training sequences shared by the holdout and GTS toys; item counts 10:3 20:3 30:2 40:1 50:1.
TRAIN = {1: [10, 20, 30, 10, 20, 30], 2: [10, 20, 30, 40], 3: [50, 10, 20]}


def seq_rows(protocol: str, name: str, users: dict[int, list[int]], split: dict[int, str]) -> list[dict]:
    return [
        {
            "protocol": protocol,
            "uid": uid,
            "name": name,
            "k": 1,
            "split": split[uid],
            "items": items,
            "timestamps": [100 * i for i in range(len(items))],
            "positions": list(range(len(items))),
        }
        for uid, items in users.items()
    ]


SEQ_SCHEMA = pa.schema(
    [
        ("protocol", pa.string()),
        ("uid", pa.int64()),
        ("name", pa.string()),
        ("k", pa.int32()),
        ("split", pa.string()),
        ("items", pa.list_(pa.int32())),
        ("timestamps", pa.list_(pa.int64())),
        ("positions", pa.list_(pa.int32())),
    ]
)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("lake")
    train_split = {1: "train", 2: "train", 3: "train", 100: "test"}
    disc = {uid: derive_items(np.array(s), "disc_track").tolist() for uid, s in TRAIN.items()}
    rows = (
        seq_rows("holdout", "lh_track", {**TRAIN, 100: [50, 50, 50, 50]}, train_split)
        + seq_rows("holdout", "disc_track", disc, train_split)
        + seq_rows("gts_test_listen_plus", "lh_track", TRAIN, train_split)
        + seq_rows("gts_test_listen_plus", "lh_artist", {1: [7, 8, 7]}, train_split)
        # A different feedback whose rows must not leak into listen_plus inputs.
        + seq_rows("gts_test_like", "lh_track", {1: [50]}, train_split)
    )
    write_deltalake(
        f"{root}/{DS}/sequences", pa.Table.from_pylist(rows, SEQ_SCHEMA), partition_by=["protocol", "name"]
    )
    holdout = [
        ("T1", "test", 100, [10, 30, 10], [40, 40, 50, 60]),  # 60 is unknown to every model
        ("T2", "test", 101, [10, 20, 20, 40], [20, 20, 10]),
        ("T1", "test", 102, [20], []),  # empty targets: skipped
        ("T1", "val", 103, [10], [20]),  # other split
        ("T3", "test", 100, [7], [8]),  # artist task: not run by track models
    ]
    write_deltalake(
        f"{root}/{DS}/holdout_examples",
        pa.Table.from_pylist(
            [
                {
                    "uid": u,
                    "task": t,
                    "split": s,
                    "history_items": h,
                    "history_timestamps": list(range(len(h))),
                    "targets": tg,
                }
                for t, s, u, h, tg in holdout
            ],
            pa.schema(
                [
                    ("uid", pa.int64()),
                    ("task", pa.string()),
                    ("split", pa.string()),
                    ("history_items", pa.list_(pa.int32())),
                    ("history_timestamps", pa.list_(pa.int64())),
                    ("targets", pa.list_(pa.int32())),
                ]
            ),
        ),
        partition_by=["split", "task"],
    )
    gts = [
        ("test", "listen_plus", "next_track", 1, [40, 70]),
        ("test", "listen_plus", "T1", 1, [40]),
        ("test", "listen_plus", "T1", 4, [50]),  # user without an lh row
        ("test", "listen_plus", "next_track", 2, []),
        ("val", "listen_plus", "next_track", 1, [10]),
        ("test", "like", "next_track", 1, [10]),
        ("test", "listen_plus", "next_artist", 1, [8]),
    ]
    write_deltalake(
        f"{root}/{DS}/gts_examples",
        pa.Table.from_pylist(
            [{"uid": u, "window": w, "feedback": f, "task": t, "targets": tg} for w, f, t, u, tg in gts],
            pa.schema(
                [
                    ("uid", pa.int64()),
                    ("window", pa.string()),
                    ("feedback", pa.string()),
                    ("task", pa.string()),
                    ("targets", pa.list_(pa.int32())),
                ]
            ),
        ),
        partition_by=["window", "feedback"],
    )
    return str(root)


def value(df: pd.DataFrame, model: str, task: str, metric: str, k: int, variant: str = "full") -> float:
    sel = df[
        (df.model == model)
        & (df.task == task)
        & (df.metric == metric)
        & (df.k == k)
        & (df.variant == variant)
    ]
    assert len(sel) == 1, (model, task, metric, k, variant)
    return float(sel.value.iloc[0])


def holdout_models(lake: str):
    lh = train_sequences(lake, DS, "holdout", "lh_track")
    disc = train_sequences(lake, DS, "holdout", "disc_track")
    return [
        fit_model("mostpop", MostPop(), lh),
        fit_model("transition", Transition(), lh),
        fit_model("transition_disc", Transition(), disc, sequence="disc_track", tasks=("T1",)),
    ]


def test_train_sequences_read_only_train_users(lake):
    assert [s.tolist() for s in train_sequences(lake, DS, "holdout", "lh_track")] == list(TRAIN.values())


def test_holdout_runner_hand_computed(lake):
    df = evaluate_holdout(holdout_models(lake), lake, DS, "test", options=EvalOptions(ks=(1, 3)))
    assert set(df.task) == {"T1", "T2"}  # T3 is an artist task
    t1 = df[(df.task == "T1") & (df.model == "mostpop")]
    assert (t1.users_evaluated == 1).all() and (t1.users_skipped == 1).all()
    assert (t1.unknown_target_items == 1).all()
    # mostpop, T1, uid 100: history {10, 30} excluded -> [20, 40, 50]; T = {40, 50, 60}
    assert value(df, "mostpop", "T1", "hr", 1) == 0.0
    assert value(df, "mostpop", "T1", "recall", 3) == pytest.approx(2 / 3)
    assert value(df, "mostpop", "T1", "precision", 3) == pytest.approx(2 / 3)
    assert value(df, "mostpop", "T1", "ndcg", 3) == pytest.approx((1 / L3 + 1 / 2) / IDCG3)
    assert value(df, "mostpop", "T1", "map", 3) == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert value(df, "mostpop", "T1", "mrr", 3) == pytest.approx(1 / 2)
    assert value(df, "mostpop", "T1", "coverage", 3) == pytest.approx(3 / 5)
    # on-task disc model: input disc([10, 30, 10]) = [10, 30], last 30 -> 40, then popularity
    assert value(df, "transition_disc", "T1", "hr", 1) == 1.0
    assert value(df, "transition_disc", "T1", "ndcg", 3) == pytest.approx((1 + 1 / 2) / IDCG3)
    # the lh model's input ends with 10 -> 20 first, so it misses at 1
    assert value(df, "transition", "T1", "hr", 1) == 0.0
    # T2, uid 101: only {10, 20, 40} -> [10, 20, 40]; T = {10, 20}
    assert value(df, "mostpop", "T2", "ndcg", 3) == pytest.approx(1.0)
    assert value(df, "mostpop", "T2", "precision", 3) == pytest.approx(2 / 3)
    assert set(df[df.model == "transition_disc"].task) == {"T1"}
    # The filters use the full history even when the model's input is a sub-sequence of it.
    lh = train_sequences(lake, DS, "holdout", "lh_track")
    narrow = [
        fit_model("pop_disc2", MostPop(), lh, sequence="disc_track", k=2, tasks=("T1",)),  # input [10]
        fit_model("pop_fam", MostPop(), lh, sequence="fam_track", tasks=("T2",)),  # input [20]
    ]
    df2 = evaluate_holdout(narrow, lake, DS, "test", options=EvalOptions(ks=(1, 3)))
    assert (df2.users_empty_input == 0).all()
    assert value(df2, "pop_disc2", "T1", "ndcg", 3) == pytest.approx(value(df, "mostpop", "T1", "ndcg", 3))
    assert value(df2, "pop_fam", "T2", "ndcg", 3) == pytest.approx(1.0)
    text = format_results(df)
    assert "transition_disc" in text and "ndcg@3" in text


def test_gts_runner_hand_computed(lake):
    lh = train_sequences(lake, DS, "gts_test_listen_plus", "lh_track")
    models = [fit_model("mostpop", MostPop(), lh), fit_model("transition", Transition(), lh)]
    df = evaluate_gts(models, lake, DS, "test", "listen_plus", options=EvalOptions(ks=(1, 3)))
    assert set(df.task) == {"next_track", "T1"} and set(df.protocol) == {"gts_test_listen_plus"}
    nt = df[(df.task == "next_track") & (df.model == "mostpop")]
    assert (nt.users_evaluated == 1).all() and (nt.users_skipped == 1).all()
    # mostpop next_track uid 1: [10, 20, 30] vs T = {40, 70}
    assert value(df, "mostpop", "next_track", "hr", 3) == 0.0
    # mostpop T1: uid 1 (history {10, 20, 30}) -> [40, 50, -]: hit at 1; uid 4 (no history) -> miss
    assert value(df, "mostpop", "T1", "hr", 1) == pytest.approx(0.5)
    assert value(df, "mostpop", "T1", "ndcg", 3) == pytest.approx(0.5)
    assert value(df, "mostpop", "T1", "precision", 3) == pytest.approx(1 / 6)
    assert (df[(df.task == "T1")].users_empty_input == 1).all()
    # transition next_track uid 1: last 30 -> {10: 1, 40: 1}, tie broken by popularity -> [10, 40, 20]
    assert value(df, "transition", "next_track", "recall", 3) == pytest.approx(1 / 2)
    assert value(df, "transition", "next_track", "ndcg", 3) == pytest.approx((1 / L3) / (1 + 1 / L3))
    assert value(df, "transition", "next_track", "mrr", 3) == pytest.approx(1 / 2)


def test_model_inputs_are_derive_items_per_user():
    rng = np.random.default_rng(0)
    history = Ragged.from_lists([rng.integers(0, 8, size=int(rng.integers(0, 25))) for _ in range(30)])
    items = ItemIndex.from_items(np.arange(0, 8, 2))  # odd ids unknown to the model
    for name in SEQUENCE_NAMES:
        for k in (1, 2, 3):
            model = fit_model("m", MostPop(), [items.ids], sequence=name, k=k)
            got = model_inputs(model, history)
            for u in range(len(history)):
                want = items.to_dense(derive_items(history[u], name, k))
                assert got[u].tolist() == want[want >= 0].tolist()


def cyclic(rng: np.random.Generator, n_users: int, length: int, n_items: int = 20) -> list[np.ndarray]:
    return [(int(rng.integers(0, n_items)) + np.arange(length)) % n_items + 100 for _ in range(n_users)]


@pytest.fixture(scope="module")
def cyclic_task():
    rng = np.random.default_rng(1)
    train = cyclic(rng, 200, 30)
    walks = cyclic(rng, 150, 11)
    ex = TaskExamples(
        "next_track",
        np.arange(150, dtype=np.int64),
        Ragged.from_lists([w[:-1] for w in walks]),
        Ragged.from_lists([w[-1:] for w in walks]),
    )
    models = [fit_model("mostpop", MostPop(), train), fit_model("transition", Transition(), train)]
    return models, ex


def test_transition_beats_mostpop_and_suffers_from_shuffling(cyclic_task):
    models, ex = cyclic_task
    df = evaluate(models, [ex], "toy", "test", EvalOptions(ks=(1, 10), shuffle_seed=3))
    assert value(df, "transition", "next_track", "hr", 1) == 1.0
    assert value(df, "mostpop", "next_track", "hr", 1) < 0.2
    shuf = value(df, "transition", "next_track", "hr", 1, "shuffled")
    assert shuf < 0.5
    change = value(df, "transition", "next_track", "hr", 1, "shuffle_change")
    assert change == pytest.approx((shuf - 1.0) / 1.0) and change < -0.5
    # popularity ignores order entirely
    assert value(df, "mostpop", "next_track", "ndcg", 10, "shuffle_change") == pytest.approx(0.0)
    again = evaluate(models, [ex], "toy", "test", EvalOptions(ks=(1, 10), shuffle_seed=3, batch_size=7))
    pd.testing.assert_frame_equal(df, again)
    other = evaluate(models, [ex], "toy", "test", EvalOptions(ks=(1, 10), shuffle_seed=4))
    assert value(other, "transition", "next_track", "ndcg", 10, "shuffled") != value(
        df, "transition", "next_track", "ndcg", 10, "shuffled"
    )


def test_shuffle_is_seeded_per_user_and_independent_of_order():
    inputs = Ragged.from_lists([np.arange(12) + 10 * u for u in range(6)])
    uids = np.array([5, 9, 2, 7, 1, 3])
    a = shuffled(inputs, uids, seed=0)
    assert not np.array_equal(a.values, inputs.values)
    for u in range(6):
        assert sorted(a[u].tolist()) == inputs[u].tolist()
    perm = np.array([3, 0, 5, 1, 4, 2])
    b = shuffled(inputs.take(perm), uids[perm], seed=0)
    assert [x.tolist() for x in b.to_lists()] == [a[i].tolist() for i in perm]
    assert not np.array_equal(shuffled(inputs, uids, seed=1).values, a.values)


class Constant(Model):
    """Every item scores the same, so rankings are decided by item id alone."""

    family = "constant"

    def fit(self, data):
        self.n_items = data.n_items
        return self

    def score(self, histories):
        return torch.zeros(len(histories), self.n_items)

    def state(self):
        return {}

    def load_state(self, state):
        raise NotImplementedError


def test_sampled_evaluation_ranks_targets_among_uninteracted_samples():
    rng = np.random.default_rng(0)
    forbidden = np.array([0, 3, 4, 9])
    neg = _sample_negatives(rng, 50, forbidden, 20)
    assert len(neg) == 20 and len(set(neg.tolist())) == 20 and not set(neg.tolist()) & set(forbidden.tolist())
    assert sorted(_sample_negatives(rng, 10, forbidden, 100).tolist()) == [1, 2, 5, 6, 7, 8]

    model = fit_model("const", Constant(), [np.arange(1000)])
    ex = TaskExamples(
        "T1",
        np.array([1, 2, 3]),
        Ragged.from_lists([[500], [500], [5]]),
        Ragged.from_lists([[0], [0, 999], []]),
    )
    options = EvalOptions(ks=(1,), sampled=True, sampled_n=100)
    df = evaluate([model], [ex], "holdout", "test", options)
    # Equal scores: item 0 beats every sample, item 999 loses to every sample.
    # user 1: HR@1 = 1; user 2: mean over targets {0, 999} = 0.5; user 3 not evaluated.
    assert value(df, "const", "T1", "hr", 1, "sampled") == pytest.approx((1 + 0.5) / 2)
    assert value(df, "const", "T1", "hr", 20, "sampled") == pytest.approx((1 + 0.5) / 2)
    assert (df.users_evaluated == 2).all()
    familiar = TaskExamples("T2", ex.uids, ex.history, ex.targets)
    assert "sampled" not in set(evaluate([model], [familiar], "holdout", "test", options).variant)


def test_external_round_trip_gives_the_runner_metrics(lake, tmp_path):
    models = holdout_models(lake)
    ks = (1, 3)
    df = evaluate_holdout(models, lake, DS, "test", options=EvalOptions(ks=ks))
    examples = load_holdout(lake, DS, "test", ("T1", "T2"))
    for model in models:
        preds = predictions(model, examples, k=max(ks))
        path = tmp_path / f"{model.name}.parquet"
        pq.write_table(preds, path)
        out_json = tmp_path / f"{model.name}.json"
        scores = score_predictions(path, "holdout", lake, DS, "test", ks=ks, output_json=out_json)
        assert set(scores) == set(df[df.model == model.name].task)
        for task, got in scores.items():
            sel = df[(df.model == model.name) & (df.task == task) & (df.metric != "coverage")]
            for r in sel.itertuples():
                assert got[f"{r.metric}@{r.k}"] == pytest.approx(r.value, abs=1e-12)
            assert got["users_evaluated"] == sel.users_evaluated.iloc[0]
            assert got["users_skipped"] == sel.users_skipped.iloc[0]
            assert got["items_removed_by_filter"] == 0
        written = json.loads(out_json.read_text())
        assert written.keys() == scores.keys()
        for task in scores:
            assert written[task] == pytest.approx(scores[task])

    lh = train_sequences(lake, DS, "gts_test_listen_plus", "lh_track")
    trans = fit_model("transition", Transition(), lh)
    gts_df = evaluate([trans], load_gts(lake, DS), "gts", "test", EvalOptions(ks=ks))
    gts_scores = score_predictions(predictions(trans, load_gts(lake, DS), 3), "gts", lake, DS, "test", ks)
    assert gts_scores["next_track"]["ndcg@3"] == pytest.approx(
        value(gts_df, "transition", "next_track", "ndcg", 3)
    )
    assert gts_scores["T1"]["hr@1"] == pytest.approx(value(gts_df, "transition", "T1", "hr", 1))


def preds(rows: list[tuple[int, str, list[int]]]) -> pa.Table:
    return pa.table(
        {
            "uid": pa.array([r[0] for r in rows], pa.int64()),
            "task": [r[1] for r in rows],
            "items": pa.array([r[2] for r in rows], pa.list_(pa.int64())),
        }
    )


def test_external_missing_users_score_zero_and_filter_applies(lake):
    examples = load_gts(lake, DS, tasks=("T1",))
    # uid 1 hits 40 at rank 1 once its history item 10 is filtered out; uid 4 has no prediction.
    scores = score_examples(preds([(1, "T1", [10, 40]), (99, "T1", [40])]), examples, ks=(1, 3))["T1"]
    assert scores["hr@1"] == pytest.approx(0.5)
    assert scores["users_without_predictions"] == 1
    assert scores["predictions_unmatched"] == 1
    assert scores["items_removed_by_filter"] == 1


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"uid": [1], "items": pa.array([[1]])}), "lack columns"),
        (pa.table({"uid": ["1"], "task": ["T1"], "items": pa.array([[1]])}), "uid must be integer"),
        (pa.table({"uid": [1], "task": ["T1"], "items": pa.array([["a"]])}), "list of integers"),
        (pa.table({"uid": [1], "task": ["T1"], "items": pa.array([None], pa.list_(pa.int64()))}), "null"),
        (preds([(1, "T1", [1]), (1, "T1", [2])]), "duplicate \\(uid, task\\).*uid=1 task=T1"),
        (preds([(1, "T1", [4, 5, 4])]), "item twice.*uid=1 task=T1 item=4"),
        (preds([(1, "T1", [-3])]), "negative"),
        (preds([(1, "T9", [1])]), "tasks \\['T9'\\]"),
    ],
)
def test_external_rejects_bad_predictions(lake, table, message):
    with pytest.raises(ValueError, match=message):
        score_predictions(table, "holdout", lake, DS)


def test_log_results_to_local_mlflow(lake, tmp_path, mlflow_store):
    df = evaluate_holdout(holdout_models(lake)[:1], lake, DS, "test", options=EvalOptions(ks=(1, 3)))
    experiment = mlflow.create_experiment("eval-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        log_results(df, prefix="final/")
    assert mlflow.get_tracking_uri() == mlflow_store  # logged into this test's own store
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged["final/test/T1/ndcg_at_3"] == pytest.approx(value(df, "mostpop", "T1", "ndcg", 3))
    assert logged["final/test/T2/precision_at_3"] == pytest.approx(value(df, "mostpop", "T2", "precision", 3))
    assert logged["final/test/T1/users_evaluated"] == 1
    csv = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evaluation/results.csv")
    pd.testing.assert_frame_equal(pd.read_csv(csv), df, check_dtype=False)
