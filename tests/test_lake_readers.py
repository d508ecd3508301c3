"""Spark-free reads of the lake: Arrow and Ray Data load `sequences` in a process without pyspark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from musicrec.contract.schemas import spark_schema
from musicrec.lake.delta import write_table
from musicrec.lake.tables import PARTITIONING, table_path

DS = "toy"
PLATFORM = str(Path(__file__).resolve().parents[1] / "platform")


def seq(protocol: str, uid: int, name: str, k: int, split: str, items: list[int]) -> tuple:
    return (
        protocol,
        uid,
        name,
        k,
        split,
        items,
        [10 * i for i in range(len(items))],
        list(range(len(items))),
    )


ROWS = [
    seq("holdout", 3, "lh_track", 2, "train", [7, 7, 8, 8]),
    seq("holdout", 1, "lh_track", 2, "train", [5, 6, 5, 6]),
    seq("holdout", 2, "lh_track", 2, "test", [9, 9]),  # another split
    seq("holdout", 1, "lh_track", 1, "train", [5, 6, 5, 6, 4]),  # another k
    seq("holdout", 1, "disc_track", 2, "train", [5, 6]),  # another name
    seq("gts_test_like", 1, "lh_track", 2, "train", [1, 1]),  # another protocol
]
# Only in the table's first version: a reader that lists the folder instead of the log sees it.
STALE = [seq("holdout", 99, "lh_track", 2, "train", [1, 1])]


def _run(script: str, env_extra: dict[str, str] | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["PYTHONPATH"] = PLATFORM + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.ray  # Ray Data in a fresh process
def test_sequences_load_with_arrow_and_ray_without_pyspark(spark, tmp_path):
    root = str(tmp_path / "lake")
    path = table_path(root, DS, "sequences")
    schema = spark_schema("sequences")
    # Written by the jobs' own Spark path, partitioned as the jobs partition it; two versions.
    for rows in (ROWS + STALE, ROWS):
        write_table(spark, spark.createDataFrame(rows, schema), path, partition_by=PARTITIONING["sequences"])
    expected = [r[5] for r in sorted(ROWS) if r[0] == "holdout" and r[2:5] == ("lh_track", 2, "train")]
    assert expected == [[5, 6, 5, 6], [7, 7, 8, 8]]

    got = _run(
        f"""
        import json, sys
        import ray
        from musicrec.lake.readers import sequences_dataset, train_sequences

        arrow = [s.tolist() for s in train_sequences({root!r}, {DS!r}, "holdout", "lh_track", 2)]
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        rows = sequences_dataset({root!r}, {DS!r}, "holdout", "lh_track", 2, "train").take_all()
        ray.shutdown()
        rows = sorted(rows, key=lambda r: r["uid"])
        print(json.dumps({{
            "pyspark": "pyspark" in sys.modules,
            "arrow": arrow,
            "ray_items": [list(map(int, r["items"])) for r in rows],
            "ray_keys": sorted({{(r["protocol"], r["name"], int(r["k"]), r["split"]) for r in rows}}),
            "ray_k_type": type(rows[0]["k"]).__name__,
        }}))
        """
    )
    assert got["pyspark"] is False
    assert got["arrow"] == expected
    assert got["ray_items"] == expected
    # Partition columns come back typed from the Delta log, not as folder-name strings.
    assert got["ray_keys"] == [["holdout", "lh_track", 2, "train"]]
    assert got["ray_k_type"] == "int"


@pytest.mark.integration  # a fresh interpreter, so earlier imports cannot hide one
def test_import_evaluate_and_readers_does_not_load_pyspark():
    got = _run(
        """
        import json, sys
        import musicrec.contract, musicrec.evaluate, musicrec.lake.readers, musicrec.models
        print(json.dumps({"pyspark": sorted(m for m in sys.modules if m.split(".")[0] == "pyspark")}))
        """
    )
    assert got["pyspark"] == []
