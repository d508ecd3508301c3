"""The ingest job end to end on a generated dataset: content checked against an independent
pyarrow/pandas computation, re-runs, a failing run that must leave the lake untouched, and the
real `spark-submit jobs/ingest.py` entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import REPO, TEST_OVERRIDES, corrupt_data_pages, truncate
from musicrec.data.generator import generate, preset
from musicrec.data.ingest import run_ingest
from musicrec.data.yambda.layout import EVENT_FILES
from musicrec.errors import InputError
from musicrec.lake.delta import read_arrow, table_version
from musicrec.lake.tables import table_path

TABLES = ("events", "quarantine", "stats")
ALL_COLUMNS_SORT = ["uid", "timestamp", "item_id", "event_type", "is_organic", "played_ratio_pct"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    generate(preset("tiny"), root, progress=False)
    return root


def expected_events(root: Path, size: str = "tiny") -> pd.DataFrame:
    """The events table computed from the files with pandas alone (no Spark, no musicrec code)."""
    frames = []
    for stem, event_type in EVENT_FILES.items():
        df = pq.read_table(root / "flat" / size / f"{stem}.parquet").to_pandas()
        frames.append(df.assign(event_type=event_type))
    events = pd.concat(frames, ignore_index=True)
    for owner, file in (("artist_id", "artist_item_mapping"), ("album_id", "album_item_mapping")):
        mapping = pq.read_table(root / f"{file}.parquet").to_pandas()
        main = mapping.groupby("item_id")[owner].min()
        events[owner] = events["item_id"].map(main)
    events["is_organic"] = events["is_organic"] == 1
    return normalise(events)


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    columns = ["uid", "item_id", "artist_id", "album_id", "timestamp", "event_type", "is_organic"]
    columns += ["played_ratio_pct", "track_length_seconds"]
    out = df[columns].copy()
    for c in columns:
        if c not in ("event_type", "is_organic"):
            out[c] = out[c].astype("Int64")
    return out.sort_values(ALL_COLUMNS_SORT, na_position="first").reset_index(drop=True)


def lake_table(config, name: str) -> pa.Table:
    return read_arrow(table_path(config.lake.root, config.dataset.name, name))


def sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=repr)


def lake_files(config) -> set[str]:
    root = Path(config.lake.root)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_generated_dataset_a_rerun_and_failed_runs_that_leave_every_table_as_it_was(
    spark, generated, config_for, tmp_path
):
    """One ingest of the generated data, then a re-run and two failing runs on the same lake (one
    test: the failing runs need a lake holding a good ingest, which is what the first part makes)."""
    config = config_for(f"data.root={generated}", "data.size=tiny", "dataset.name=gen")
    summary = run_ingest(config, spark)

    # Rows in per event type are the files' row counts, and each is rows out + quarantined.
    for stem, event_type in EVENT_FILES.items():
        in_file = pq.read_metadata(generated / "flat" / "tiny" / f"{stem}.parquet").num_rows
        assert summary["rows_in"][event_type] == in_file
        quarantined = summary["quarantined"].get(event_type, 0)
        assert summary["rows_in"][event_type] == summary["rows_out"][event_type] + quarantined

    # The whole events table, main artist and album included, equals an independent computation.
    events = normalise(lake_table(config, "events").to_pandas())
    expected = expected_events(generated)
    pd.testing.assert_frame_equal(events, expected, check_dtype=False)
    artists = pq.read_table(generated / "artist_item_mapping.parquet").to_pandas()
    multi = artists.groupby("item_id")["artist_id"].nunique()
    heard_multi = set(events["item_id"]) & set(multi[multi > 1].index)
    assert heard_multi, "the generated data must exercise the smallest-artist rule"

    stats = {
        (r["section"], r["name"]): r["value"]
        for r in lake_table(config, "stats").to_pylist()
        if not r["detail"]
    }
    assert stats[("events", "users")] == expected["uid"].nunique()
    assert stats[("events", "items")] == expected["item_id"].nunique()
    assert (
        stats[("events", "items_without_artist")]
        == expected.loc[expected["artist_id"].isna(), "item_id"].nunique()
    )
    assert stats[("events", "items_with_several_artists")] == len(heard_multi)
    unmapped = expected["artist_id"].isna()
    assert unmapped.any(), "the generated data must have events without an artist"
    assert summary["events_without_artist"].startswith(
        f"{unmapped.sum()} of {len(expected)} ({unmapped.mean():.1%}), on "
        f"{expected.loc[unmapped, 'item_id'].nunique()} items absent from the artist mapping"
    )
    assert set(lake_table(config, "stats").column("job").to_pylist()) == {"ingest"}

    # A re-run writes a new version of each table with the same content.
    before = {name: sorted_rows(lake_table(config, name)) for name in TABLES}
    again = run_ingest(config, spark)
    assert again["versions"] == {name: v + 1 for name, v in summary["versions"].items()}
    assert {name: sorted_rows(lake_table(config, name)) for name in TABLES} == before

    # Failed runs change nothing: versions, content and files of every table stay as they are.
    versions = {name: table_version(table_path(config.lake.root, "gen", name)) for name in TABLES}
    content = {name: sorted_rows(lake_table(config, name)) for name in TABLES}
    files = lake_files(config)

    # Same dataset name and lake, new input: 5% of the listens lose their uid (bound: 1%).
    bad_root = tmp_path / "bad"
    shutil.copytree(generated, bad_root)
    listens_path = bad_root / "flat" / "tiny" / "listens.parquet"
    listens = pq.read_table(listens_path)
    n_bad = listens.num_rows // 20
    mask = pa.array([i < n_bad for i in range(listens.num_rows)])
    uid = pc.if_else(mask, pa.scalar(None, pa.uint32()), listens["uid"])
    pq.write_table(listens.set_column(0, "uid", uid), listens_path)
    bad = config_for(f"data.root={bad_root}", "data.size=tiny", "dataset.name=gen")
    with pytest.raises(InputError, match=f"null_uid {n_bad} in flat/tiny/listens.parquet"):
        run_ingest(bad, spark)

    # And a schema failure (string timestamps) on the same lake.
    likes_path = bad_root / "flat" / "tiny" / "likes.parquet"
    likes = pq.read_table(likes_path)
    pq.write_table(likes.set_column(2, "timestamp", pc.cast(likes["timestamp"], pa.string())), likes_path)
    with pytest.raises(InputError, match="column 'timestamp' has type string"):
        run_ingest(bad, spark)

    assert {name: table_version(table_path(config.lake.root, "gen", name)) for name in TABLES} == versions
    assert {name: sorted_rows(lake_table(config, name)) for name in TABLES} == content
    assert lake_files(config) == files, "a failed run must not even stage files"


def test_spark_submit_entry_point(generated, tmp_path, spark_submit):
    common = (
        f"data.root={generated}",
        f"lake.root={tmp_path / 'lake'}",
        f"mlflow.local_dir={tmp_path / 'mlflow'}",
        "dataset.name=cli",
        "runtime.progress=false",
        # The config says local[*]: spark-submit's --master local[2] must win.
        "runtime.spark.master=local[*]",
        "runtime.spark.shuffle_partitions=4",
    )
    ok = spark_submit("ingest", *common, "data.size=tiny")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "rows_in:" in ok.stdout
    assert "master local[2]" in ok.stdout + ok.stderr
    events = read_arrow(table_path(str(tmp_path / "lake"), "cli", "events"))
    assert events.num_rows == len(expected_events(generated))

    failed = spark_submit("ingest", *common, "data.size=nope")
    assert failed.returncode == 1
    # spark-submit merges the Python driver's stderr into its own stdout: look at both streams.
    output = failed.stdout + failed.stderr
    errors = [line for line in output.splitlines() if line.startswith("musicrec ingest: error:")]
    assert len(errors) == 1, output[-3000:]
    assert "missing required files" in errors[0] and "flat/nope/listens.parquet" in errors[0]
    assert "Traceback" not in output


@pytest.mark.spark
@pytest.mark.integration
@pytest.mark.parametrize("damage", [corrupt_data_pages, truncate], ids=["corrupt_pages", "truncated"])
def test_damaged_file_is_one_line_naming_it(generated, tmp_path, damage):
    """As a user sees it: ``musicrec ingest`` on a damaged file prints one error line, no trace."""
    data = tmp_path / "data"
    shutil.copytree(generated, data)
    damage(data / "flat" / "tiny" / "listens.parquet")
    lake = tmp_path / "lake"
    proc = subprocess.run(
        [sys.executable, "-m", "musicrec.cli", "ingest", "--config", "conf/local.yaml", f"data.root={data}",
         "data.size=tiny", "dataset.name=t", f"lake.root={lake}", f"mlflow.local_dir={tmp_path / 'ml'}",
         *TEST_OVERRIDES, "runtime.log_level=WARNING"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("musicrec ingest: error:") and "flat/tiny/listens.parquet" in last, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "exception" in line.lower()]
    assert errors == [last], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "\tat " not in proc.stderr
    assert not lake.exists()
