"""`musicrec score` on bad input: exit code, one clear line on stderr, never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from musicrec.cli import main
from musicrec.contract.schemas import HOLDOUT_EXAMPLES
from musicrec.evaluate.metrics import compute_metrics, key_span

DS = "toy"


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("score") / "lake"
    rows = [
        {
            "uid": 1,
            "task": "T1",
            "split": "test",
            "history_items": [5],
            "history_timestamps": [0],
            "targets": [7],
        },
        {
            "uid": 2,
            "task": "T1",
            "split": "test",
            "history_items": [5],
            "history_timestamps": [0],
            "targets": [8],
        },
    ]
    write_deltalake(
        f"{root}/{DS}/holdout_examples", pa.Table.from_pylist(rows, HOLDOUT_EXAMPLES), partition_by=["task"]
    )
    return str(root)


def predictions(tmp_path, rows: list[tuple[int, str, list[int]]]) -> str:
    path = tmp_path / "predictions.parquet"
    table = pa.table(
        {
            "uid": pa.array([r[0] for r in rows], pa.int64()),
            "task": pa.array([r[1] for r in rows], pa.string()),
            "items": pa.array([r[2] for r in rows], pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, path)
    return str(path)


def score(capsys, lake: str, path: str, *extra: str) -> tuple[int, list[str], str]:
    code = main(
        [
            "score",
            "--predictions",
            path,
            "--examples",
            "holdout",
            "--lake",
            lake,
            "--dataset",
            DS,
            "--k",
            "1",
            *extra,
            "runtime.log_level=WARNING",
            f"mlflow.local_dir={Path(lake).parent / 'mlflow'}",  # every verb is an MLflow run: keep it here
        ]
    )
    out = capsys.readouterr()
    return code, [line for line in out.err.splitlines() if line.strip()], out.out


def test_valid_predictions_score(capsys, lake, tmp_path):
    code, err, out = score(capsys, lake, predictions(tmp_path, [(1, "T1", [7]), (2, "T1", [9])]))
    assert code == 0 and err == []
    assert '"hr@1": 0.5' in out


@pytest.mark.parametrize("column", ["uid", "items"])
def test_ids_beyond_int32_are_rejected(capsys, lake, tmp_path, column):
    # 2**62 + 7 once overflowed the (user, item) keys into a false hit on item 7.
    big = 2**62 + 7
    rows = [(big, "T1", [7]), (2, "T1", [8])] if column == "uid" else [(1, "T1", [big]), (2, "T1", [big])]
    code, err, _ = score(capsys, lake, predictions(tmp_path, rows))
    assert code == 1
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"predictions column {column} holds id {big}, above 2147483647" in err[0]


def test_relevance_keys_refuse_to_overflow():
    with pytest.raises(ValueError, match="too large"):
        key_span(2, np.array([2**62]))
    # One user cannot collide with another: the keys fit and no false hit appears.
    result = compute_metrics(np.array([[2**62]]), [[0]], ks=(1,), metrics=("hr",))
    assert result.mean()[("hr", 1)] == 0.0


def test_empty_predictions_warn(capsys, lake, tmp_path):
    code, err, out = score(capsys, lake, predictions(tmp_path, []))
    assert code == 0
    assert len(err) == 1 and "WARNING" in err[0] and "the predictions hold no rows" in err[0]
    assert "tasks: []" in out


@pytest.mark.parametrize("k", ["0", "-1", "10,0", "ten", ""])
def test_bad_k_says_what_is_allowed(capsys, lake, tmp_path, k):
    code, err, _ = score(capsys, lake, predictions(tmp_path, [(1, "T1", [7])]), "--k", k)
    assert code == 1
    assert err == [
        f"musicrec score: error: --k must be comma-separated positive integers (e.g. 10,100), got {k!r}"
    ]


def test_missing_file_says_not_found(capsys, lake, tmp_path):
    missing = str(tmp_path / "nope.parquet")
    code, err, _ = score(capsys, lake, missing)
    assert code == 1
    assert err == [f"musicrec score: error: predictions file {missing} not found"]
