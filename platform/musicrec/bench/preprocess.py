"""Preprocessing benchmark (docs/benchmarks.md, ``preprocess``): Spark vs the Polars reference.

Both engines run the same transform (events table -> sequences, user_splits,
holdout_examples, gts_examples) on the same events; Spark once per lake write path (the native
Delta writer where its jars are set up, and delta-rs), each run in its own process so that its
peak memory (RSS of the whole process tree: Spark's JVM and Python workers included) is
measured alone. Times cover reading the events and writing every output (Spark: staged and
committed Delta tables, stats included; Polars: one Parquet file per table); Spark's start-up
is excluded. A cheap differential check compares per-table row counts and the number of
sequence elements per (protocol, name, k).

Events come from the synthetic generator (the Yambda-50M shape with users scaled to the
requested size).

    python -m musicrec.bench.preprocess --events 1000000 --workdir /tmp/bench-prep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from musicrec.contract.schemas import EVENTS as EVENTS_SCHEMA

DATASET = "bench"
# Generator preset whose shape (history lengths, catalogue) every size shares; users scale.
SHAPE = "yambda-50m"
SHAPE_LISTENS_PER_USER = 4_400
# conf/datasets/synthetic-50m.yaml keeps tracks heard by 20 users at ~47M events; smaller sizes
# (fewer users, same shape) scale that down so the holdout side still does comparable work.
MIN_USERS_AT_47M = 20
OUTPUTS = ("sequences", "user_splits", "holdout_examples", "gts_examples")


def generated_events(n_events: int, data_root: Path, seed: int = 0) -> pa.Table:
    """Events of the synthetic generator at about ``n_events`` listens, joined to their main artist and album."""
    from musicrec.data.generator import generate, preset
    from musicrec.data.yambda.layout import EVENT_FILES

    n_users = max(1, round(n_events / SHAPE_LISTENS_PER_USER))
    shutil.rmtree(data_root, ignore_errors=True)
    generate(preset(SHAPE, n_users=n_users, seed=seed), data_root, size="bench", progress=False)
    flat = data_root / "flat" / "bench"
    parts = []
    for stem, event_type in EVENT_FILES.items():
        file = flat / f"{stem}.parquet"
        if not file.exists():
            continue
        t = pq.read_table(file)
        n = t.num_rows
        parts.append(
            pa.table(
                {
                    "uid": t["uid"].cast(pa.int32()),
                    "item_id": t["item_id"].cast(pa.int32()),
                    "timestamp": t["timestamp"].cast(pa.int64()),
                    "event_type": pa.repeat(pa.scalar(event_type), n),
                    "is_organic": t["is_organic"].cast(pa.bool_()),
                    "played_ratio_pct": t["played_ratio_pct"].cast(pa.int32())
                    if "played_ratio_pct" in t.column_names
                    else pa.nulls(n, pa.int32()),
                    "track_length_seconds": t["track_length_seconds"].cast(pa.int32())
                    if "track_length_seconds" in t.column_names
                    else pa.nulls(n, pa.int32()),
                }
            )
        )
    events = pa.concat_tables(parts)
    artists = (
        pq.read_table(data_root / "artist_item_mapping.parquet")
        .group_by("item_id")
        .aggregate([("artist_id", "min")])
    )
    albums = (
        pq.read_table(data_root / "album_item_mapping.parquet")
        .group_by("item_id")
        .aggregate([("album_id", "min")])
    )
    mapping = artists.rename_columns(["item_id", "artist_id"]).join(
        albums.rename_columns(["item_id", "album_id"]), "item_id", join_type="full outer"
    )
    mapping = mapping.set_column(0, "item_id", mapping["item_id"].cast(pa.int32()))
    joined = events.join(mapping, "item_id", join_type="left outer")
    return pa.table({f.name: joined[f.name].cast(f.type) for f in EVENTS_SCHEMA}, schema=EVENTS_SCHEMA)


def _overrides(workdir: Path, spark_master: str, driver_memory: str, min_users: int, hugepages: bool) -> list[str]:
    return [
        f"runtime.numpy_hugepages={str(hugepages).lower()}",
        f"runtime.spark.master={spark_master}",
        f"runtime.spark.driver_memory={driver_memory}",
        "runtime.spark.shuffle_partitions=8",
        "runtime.progress=false",
        "runtime.log_level=WARNING",
        f"lake.root={workdir / 'lake'}",
        f"dataset.name={DATASET}",
        f"preprocess.popularity.min_users={min_users}",
    ]


@dataclass
class Measured:
    result: dict[str, Any]
    peak_rss_mb: float  # largest sum of RSS over the process tree
    cpu_seconds: float  # user + system time of every process of the tree (load-independent, unlike wall time)


def _run_measured(args: list[str], env: dict[str, str]) -> Measured:
    """Run a child process, sampling its process tree; its JSON result is the last stdout line."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    cpu: dict[int, float] = {}  # own user + system time per process, last sample
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                rss = 0
                for p in tree:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        times = p.cpu_times()
                        cpu[p.pid] = times.user + times.system
                peak = max(peak, rss)
            except psutil.Error:
                pass
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} failed ({proc.returncode}):\n{err[-4000:]}")
    return Measured(json.loads(out.strip().splitlines()[-1]), peak / 2**20, sum(cpu.values()))


def _child_setup(workdir: Path, n_events: int, seed: int, overrides: list[str]) -> dict[str, Any]:
    from musicrec.config import load_config
    from musicrec.lake.snapshot import JobSnapshot
    from musicrec.runtime.spark import get_spark

    config = load_config(overrides=overrides)
    events = generated_events(n_events, workdir / "data", seed)
    staging = workdir / "events.parquet"
    pq.write_table(events, staging, row_group_size=1 << 20)
    spark = get_spark(config, app_name="musicrec-bench-setup")
    # Published as ingest publishes it: once preprocess has published, readers see published tables only.
    with JobSnapshot(spark, config, job="ingest") as snap:
        snap.stage("events", spark.read.parquet(str(staging)))
        snap.publish()
    staging.unlink()
    return {
        "events": events.num_rows,
        "listens": int(np.sum(events["event_type"].to_numpy(zero_copy_only=False) == "listen")),
    }


def _child_spark(overrides: list[str]) -> dict[str, Any]:
    from musicrec.config import load_config
    from musicrec.lake.delta import resolve_writer
    from musicrec.prep.job import run_preprocess
    from musicrec.runtime.hugepages import apply_numpy_hugepages
    from musicrec.runtime.spark import get_spark

    config = load_config(overrides=overrides)
    apply_numpy_hugepages(config.runtime.numpy_hugepages)  # as `musicrec preprocess` does
    spark = get_spark(config, app_name="musicrec-bench-preprocess")
    writer = resolve_writer(spark, config.lake.writer)
    started = time.perf_counter()
    run_preprocess(config, spark)
    return {"seconds": time.perf_counter() - started, "writer": writer}


def writers() -> tuple[str, ...]:
    """The write paths this machine has: the native one only where ``make setup`` fetched the jars."""
    from musicrec.runtime.jars import local_jars

    return ("spark_delta", "delta_rs") if local_jars() else ("delta_rs",)


def _child_polars(workdir: Path, overrides: list[str]) -> dict[str, Any]:
    import polars as pl

    from musicrec.bench.polars_reference import parts
    from musicrec.config import load_config
    from musicrec.lake.delta import read_arrow
    from musicrec.lake.tables import PARTITIONING, table_path

    config = load_config(overrides=overrides)
    started = time.perf_counter()
    events = pl.from_arrow(read_arrow(table_path(config.lake.root, DATASET, "events")))
    out = workdir / "polars"
    shutil.rmtree(out, ignore_errors=True)  # a previous size's partitions must not linger
    out.mkdir()
    small: dict[str, list[pl.DataFrame]] = {}
    for name, part in parts(events, config):  # type: ignore[arg-type]
        if name == "sequences":
            # Streamed to disk part by part (one (protocol, name, k) each), laid out like the lake.
            part.write_parquet(out / name, partition_by=list(PARTITIONING[name]))
        else:
            small.setdefault(name, []).append(part)
    for name, frames in small.items():
        pl.concat(frames).write_parquet(out / f"{name}.parquet")
    return {"seconds": time.perf_counter() - started}


def _digest(tables: dict[str, Any]) -> dict[str, int]:
    """Row count per table and element count per (protocol, name, k) of sequences."""
    import polars as pl

    out = {f"rows.{name}": int(t.select(pl.len()).collect().item()) for name, t in tables.items()}
    lengths = (
        tables["sequences"]
        .group_by("protocol", "name", "k")
        .agg(pl.col("items").list.len().sum().alias("n"))
        .collect()
    )
    out.update(
        {
            f"elements.{r['protocol']}/{r['name']}/k={r['k']}": int(r["n"])
            for r in lengths.iter_rows(named=True)
        }
    )
    return out


def spark_digest(workdir: Path) -> dict[str, int]:
    import polars as pl
    from deltalake import DeltaTable

    lake = workdir / "lake" / DATASET
    return _digest({n: pl.scan_pyarrow_dataset(DeltaTable(str(lake / n)).to_pyarrow_dataset()) for n in OUTPUTS})


def polars_digest(workdir: Path) -> dict[str, int]:
    import polars as pl

    return _digest({
        n: pl.scan_parquet(workdir / "polars" / n, hive_partitioning=True)
        if n == "sequences"
        else pl.scan_parquet(workdir / "polars" / f"{n}.parquet")
        for n in OUTPUTS
    })


def bench_preprocess(
    n_events: int,
    *,
    workdir: str | Path,
    seed: int = 0,
    spark_master: str = "local[2]",
    driver_memory: str = "6g",
    min_users: int | None = None,
    numpy_hugepages: bool = False,
) -> dict[str, Any]:
    """Time Spark ``run_preprocess`` on each write path and the Polars reference on the same events;
    see the module doc. Keys of a write path's figures start with ``spark_<writer>_``."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if min_users is None:
        min_users = max(2, round(MIN_USERS_AT_47M * n_events / 47_000_000))
    overrides = _overrides(workdir, spark_master, driver_memory, min_users, numpy_hugepages)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    me = [sys.executable, "-m", "musicrec.bench.preprocess", "--workdir", str(workdir), "--child"]
    tail = ["--overrides", *overrides]
    setup = _run_measured(
        [*me, "setup", "--events", str(n_events), "--seed", str(seed), *tail], env
    ).result
    n = setup["events"]
    load = os.getloadavg()[0]
    polars = _run_measured([*me, "polars", *tail], env)
    reference = polars_digest(workdir)
    polars_s = polars.result["seconds"]
    out: dict[str, Any] = {
        "events": n,
        "listens": setup["listens"],
        "cores": os.cpu_count(),
        "load_average_before": round(load, 2),
        "spark_master": spark_master,
        "popularity_min_users": min_users,
        "polars_seconds": round(polars_s, 2),
        "polars_events_per_s": round(n / polars_s),
        "polars_cpu_seconds": round(polars.cpu_seconds, 1),
        "polars_peak_rss_mb": round(polars.peak_rss_mb),
    }
    for writer in writers():
        # Each run rewrites the same lake's outputs (a new version of each table), then is compared.
        spark = _run_measured([*me, "spark", *tail, f"lake.writer={writer}"], env)
        if spark.result["writer"] != writer:
            raise RuntimeError(f"asked for lake.writer={writer}, Spark wrote with {spark.result['writer']}")
        digest = spark_digest(workdir)
        spark_s = spark.result["seconds"]
        out |= {
            f"spark_{writer}_seconds": round(spark_s, 2),
            f"spark_{writer}_events_per_s": round(n / spark_s),
            f"ratio_spark_{writer}_over_polars": round(spark_s / polars_s, 2),
            f"spark_{writer}_cpu_seconds": round(spark.cpu_seconds, 1),
            f"cpu_ratio_spark_{writer}_over_polars": round(spark.cpu_seconds / polars.cpu_seconds, 2),
            f"spark_{writer}_peak_rss_mb": round(spark.peak_rss_mb),
            f"spark_{writer}_outputs_agree": digest == reference,
            f"spark_{writer}_differences": sorted(
                k for k in digest.keys() | reference.keys() if digest.get(k) != reference.get(k)
            ),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["setup", "spark", "polars"])
    parser.add_argument("--overrides", nargs="*", default=[])
    args = parser.parse_args(argv)
    if args.child == "setup":
        result = _child_setup(args.workdir, args.events, args.seed, args.overrides)
    elif args.child == "spark":
        result = _child_spark(args.overrides)
    elif args.child == "polars":
        result = _child_polars(args.workdir, args.overrides)
    else:
        result = bench_preprocess(args.events, workdir=args.workdir, seed=args.seed)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
