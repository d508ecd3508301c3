"""Ingest validation: one test per class of bad input, on small Yambda-typed files built here.

Every error case asserts the message (file, column, expected and found type) and that no table
was written; every bad-row case asserts the quarantine row, its reason, its count in the stats
and its absence from `events`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import corrupt_data_pages, truncate
from musicrec.data import validate
from musicrec.data.ingest import run_ingest
from musicrec.data.yambda.layout import EVENT_FILES
from musicrec.errors import InputError
from musicrec.lake.delta import read_arrow
from musicrec.lake.tables import table_path

SIZE = "t"
U32, U16, U8 = pa.uint32(), pa.uint16(), pa.uint8()
EVENT_KEYS = ["uid", "item_id", "timestamp", "event_type"]


def yambda_tables(users: int = 4, listens_per_user: int = 50) -> dict[str, pa.Table]:
    """A small, valid dataset in Yambda's exact types, sorted by (uid, timestamp)."""
    uid, item, ts, organic, ratio, length = [], [], [], [], [], []
    for u in range(users):
        for k in range(listens_per_user):
            uid.append(u)
            item.append((u * 7 + k * 3) % 20)
            ts.append(1_000 + 5 * k)
            organic.append(k % 2)
            ratio.append(None if k % 11 == 0 else (k * 37) % 120)
            length.append(None if k % 13 == 0 else 150 + k)
    listens = pa.table(
        {
            "uid": pa.array(uid, U32),
            "item_id": pa.array(item, U32),
            "timestamp": pa.array(ts, U32),
            "is_organic": pa.array(organic, U8),
            "played_ratio_pct": pa.array(ratio, U16),
            "track_length_seconds": pa.array(length, U32),
        }
    )
    interactions = listens.select(["uid", "item_id", "timestamp", "is_organic"])
    tables = {
        "listens": listens,
        "likes": interactions.take(list(range(0, len(uid), 5))),
        "dislikes": interactions.take([3, 60]),
        "unlikes": interactions.take([10]),
        "undislikes": interactions.take([61]),
    }
    # Items 0..18 mapped; some have two artists or albums (the smallest id is the main one); 19 is unmapped.
    art_item = [*range(19), 3, 7, 11]
    art = [i % 5 + 10 for i in range(19)] + [2, 30, 12]
    alb_item = [*range(19), 4]
    alb = [i // 2 + 100 for i in range(19)] + [1]
    tables["artist_item_mapping"] = pa.table(
        {"artist_id": pa.array(art, U32), "item_id": pa.array(art_item, U32)}
    )
    tables["album_item_mapping"] = pa.table(
        {"album_id": pa.array(alb, U32), "item_id": pa.array(alb_item, U32)}
    )
    return tables


def multi_event(tables: dict[str, pa.Table]) -> pa.Table:
    parts = []
    for stem, event_type in EVENT_FILES.items():
        t = tables[stem]
        for col, typ in (("played_ratio_pct", U16), ("track_length_seconds", U32)):
            if col not in t.column_names:
                t = t.append_column(col, pa.nulls(len(t), typ))
        parts.append(t.append_column("event_type", pa.array([event_type] * len(t), pa.string())))
    return pa.concat_tables(parts).sort_by([("uid", "ascending"), ("timestamp", "ascending")])


def write_flat(root: Path, tables: dict[str, pa.Table], *, multi: bool = False) -> Path:
    folder = root / "flat" / SIZE
    folder.mkdir(parents=True, exist_ok=True)
    if multi:
        pq.write_table(multi_event(tables), folder / "multi_event.parquet")
    else:
        for stem in EVENT_FILES:
            pq.write_table(tables[stem], folder / f"{stem}.parquet")
    for name in ("artist_item_mapping", "album_item_mapping"):
        pq.write_table(tables[name], root / f"{name}.parquet")
    return folder


def to_sequential(table: pa.Table, *, plural: bool) -> pa.Table:
    """One row per uid, every other column a list in time order, named like either Yambda variant."""
    uids = pc.unique(table["uid"]).to_pylist()
    columns = {"uid": pa.array(uids, U32)}
    for c in table.column_names:
        if c != "uid":
            lists = [table.filter(pc.equal(table["uid"], u))[c].to_pylist() for u in uids]
            columns[f"{c}s" if plural else c] = pa.array(lists, pa.list_(table.schema.field(c).type))
    return pa.table(columns)


def write_sequential(root: Path, tables: dict[str, pa.Table], *, plural: bool, multi: bool = False) -> None:
    folder = root / "sequential" / SIZE
    folder.mkdir(parents=True, exist_ok=True)
    if multi:
        pq.write_table(to_sequential(multi_event(tables), plural=plural), folder / "multi_event.parquet")
    else:
        for stem in EVENT_FILES:
            pq.write_table(to_sequential(tables[stem], plural=plural), folder / f"{stem}.parquet")
    for name in ("artist_item_mapping", "album_item_mapping"):
        pq.write_table(tables[name], root / f"{name}.parquet")


def to_signed(table: pa.Table) -> pa.Table:
    """int32/int16/int8 for Yambda's unsigned widths, int64 timestamps: every integer type Spark reads."""
    signed = {U32: pa.int32(), U16: pa.int16(), U8: pa.int8()}
    return table.cast(
        pa.schema([(f.name, pa.int64() if f.name == "timestamp" else signed[f.type]) for f in table.schema])
    )


def with_column(table: pa.Table, name: str, values: list) -> pa.Table:
    typ = table.schema.field(name).type
    return table.set_column(table.column_names.index(name), name, pa.array(values, typ))


def events_of(config) -> pa.Table:
    path = table_path(config.lake.root, config.dataset.name, "events")
    return read_arrow(path).sort_by([(c, "ascending") for c in EVENT_KEYS])


def table_of(config, name: str) -> pa.Table:
    return read_arrow(table_path(config.lake.root, config.dataset.name, name))


def stat(config, section: str, name: str) -> float:
    stats = table_of(config, "stats").to_pylist()
    values = [r["value"] for r in stats if r["section"] == section and r["name"] == name]
    assert values, f"no stats row {section}/{name}"
    return sum(values)


@pytest.fixture
def data_root(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_config(config_for):
    def make(*overrides: str):
        return config_for(f"data.size={SIZE}", "dataset.name=t", *overrides)

    return make


def expect_input_error(spark, config, *fragments: str) -> str:
    with pytest.raises(InputError) as info:
        run_ingest(config, spark)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message
    assert not os.path.exists(config.lake.root), "a failed check must write nothing"
    return message


# --- files and schemas: a clear error before anything is written ---------------------------------


def test_missing_file(spark, data_root, make_config):
    folder = write_flat(data_root, yambda_tables())
    (folder / "likes.parquet").unlink()
    (data_root / "album_item_mapping.parquet").unlink()
    expect_input_error(
        spark, make_config(), "missing required files", "flat/t/likes.parquet", "album_item_mapping.parquet"
    )


def test_missing_column(spark, data_root, make_config):
    tables = yambda_tables()
    tables["dislikes"] = tables["dislikes"].drop_columns(["is_organic"])
    write_flat(data_root, tables)
    expect_input_error(
        spark, make_config(), "flat/t/dislikes.parquet", "missing column 'is_organic'", "Yambda uint8"
    )


def test_wrong_column_type(spark, data_root, make_config):
    tables = yambda_tables()
    listens = tables["listens"]
    tables["listens"] = listens.set_column(0, "uid", pc.cast(listens["uid"], pa.string()))
    tables["artist_item_mapping"] = tables["artist_item_mapping"].set_column(
        0, "artist_id", pc.cast(tables["artist_item_mapping"]["artist_id"], pa.float64())
    )
    write_flat(data_root, tables)
    message = expect_input_error(
        spark,
        make_config(),
        "flat/t/listens.parquet: column 'uid' has type string, expected an integer type (Yambda uint32)",
        "artist_item_mapping.parquet: column 'artist_id' has type double",
    )
    assert "likes.parquet" not in message  # the correct files are not blamed


def test_empty_files(spark, data_root, make_config):
    tables = yambda_tables()
    folder = write_flat(data_root, tables)
    # A zero-byte file is not Parquet: a clear error, and Spark never gets to log a footer stack trace.
    (folder / "listens.parquet").write_bytes(b"")
    expect_input_error(spark, make_config(), "empty file (0 bytes, not Parquet) flat/t/listens.parquet")

    # Neither is a non-empty file that is not Parquet.
    (folder / "listens.parquet").write_text("uid,item_id\n1,2\n")
    expect_input_error(spark, make_config(), "flat/t/listens.parquet: not a readable Parquet file")

    # Valid Parquet files without a single event: an error too.
    for stem in EVENT_FILES:
        pq.write_table(tables[stem].slice(0, 0), folder / f"{stem}.parquet")
    expect_input_error(spark, make_config(), "no events to ingest", "flat/t/listens.parquet")

    # One empty event file among non-empty ones is valid: counted as 0 rows in, not an error.
    write_flat(data_root, tables)
    pq.write_table(tables["unlikes"].slice(0, 0), folder / "unlikes.parquet")
    config = make_config()
    summary = run_ingest(config, spark)
    assert summary["rows_in"]["unlike"] == 0
    assert stat(config, "rows_in", "unlike") == 0


def test_corrupt_data_pages_name_the_file(spark, data_root, make_config):
    folder = write_flat(data_root, yambda_tables())
    corrupt_data_pages(folder / "likes.parquet")  # the footer reads: the damage shows only in a job
    expect_input_error(spark, make_config(), "flat/t/likes.parquet: corrupt Parquet data (", "nothing was written")


def test_truncated_file_names_the_file(spark, data_root, make_config):
    folder = write_flat(data_root, yambda_tables())
    truncate(folder / "listens.parquet")
    expect_input_error(spark, make_config(), "flat/t/listens.parquet: not a readable Parquet file", "truncated")


# --- bad rows: quarantined with a reason, counted, excluded -------------------------------------


def check_quarantined(spark, config, expected: dict[str, int], good_events: int) -> pa.Table:
    summary = run_ingest(config, spark)
    quarantine = table_of(config, "quarantine")
    reasons = quarantine.column("reason").to_pylist()
    assert {r: reasons.count(r) for r in set(reasons)} == expected
    for reason, n in expected.items():
        assert stat(config, "quarantined", reason) == n
    assert events_of(config).num_rows == good_events
    assert sum(summary["rows_in"].values()) == sum(summary["rows_out"].values()) + sum(expected.values())
    return quarantine


def test_null_keys(spark, data_root, make_config):
    tables = yambda_tables()
    likes = tables["likes"]
    uid = likes["uid"].to_pylist()
    item = likes["item_id"].to_pylist()
    ts = likes["timestamp"].to_pylist()
    # Row 2 also has a null item: the first failing check (null_uid) is its one reason.
    uid[1] = uid[2] = None
    item[2] = item[3] = None
    ts[4] = None
    likes = with_column(with_column(with_column(likes, "uid", uid), "item_id", item), "timestamp", ts)
    tables["likes"] = likes
    write_flat(data_root, tables)
    total = sum(tables[s].num_rows for s in EVENT_FILES)
    q = check_quarantined(
        spark,
        make_config("ingest.max_quarantine_share=0.05"),
        {"null_uid": 2, "null_item_id": 1, "null_timestamp": 1},
        total - 4,
    )
    assert set(q.column("source_file").to_pylist()) == {"flat/t/likes.parquet"}
    assert set(q.column("event_type").to_pylist()) == {"like"}


def test_ids_beyond_int32(spark, data_root, make_config):
    tables = yambda_tables()
    listens = tables["listens"]
    uid = listens["uid"].to_pylist()
    item = listens["item_id"].to_pylist()
    uid[0] = 2**31  # one past int32: Yambda's uint32 allows it, our int columns do not
    item[1] = 2**32 - 1
    tables["listens"] = with_column(with_column(listens, "uid", uid), "item_id", item)
    artists = tables["artist_item_mapping"]
    tables["artist_item_mapping"] = with_column(
        artists, "artist_id", [2**31 + 7, *artists["artist_id"].to_pylist()[1:]]
    )
    write_flat(data_root, tables)
    total = sum(tables[s].num_rows for s in EVENT_FILES)
    config = make_config("ingest.max_quarantine_share=0.05")
    q = check_quarantined(
        spark,
        config,
        {"uid_out_of_range": 1, "item_id_out_of_range": 1, "artist_id_out_of_range": 1},
        total - 2,
    )
    raw = {r["reason"]: r for r in q.to_pylist()}
    assert raw["uid_out_of_range"]["uid"] == 2**31  # the raw value as read, not a wrapped int
    assert raw["item_id_out_of_range"]["item_id"] == 2**32 - 1
    assert raw["artist_id_out_of_range"]["artist_id"] == 2**31 + 7
    assert raw["artist_id_out_of_range"]["source_file"] == "artist_item_mapping.parquet"
    # Item 0's only artist row was rejected, so item 0 is unmapped in events.
    events = events_of(config)
    artists_of_0 = set(pc.filter(events["artist_id"], pc.equal(events["item_id"], 0)).to_pylist())
    assert artists_of_0 == {None}


def test_timestamps_out_of_range(spark, data_root, make_config):
    tables = yambda_tables()
    listens = tables["listens"]
    ts = listens["timestamp"].to_pylist()
    ts[5] = 999  # below timestamp_min
    ts[6] = 5_001  # above timestamp_max
    tables["listens"] = with_column(listens, "timestamp", ts)
    write_flat(data_root, tables)
    total = sum(tables[s].num_rows for s in EVENT_FILES)
    config = make_config(
        "ingest.timestamp_min=1000", "ingest.timestamp_max=5000", "ingest.max_quarantine_share=0.05"
    )
    q = check_quarantined(spark, config, {"timestamp_out_of_range": 2}, total - 2)
    assert sorted(q.column("timestamp").to_pylist()) == [999, 5_001]
    events = events_of(config)
    assert pc.min(events["timestamp"]).as_py() >= 1000 and pc.max(events["timestamp"]).as_py() <= 5000


def test_unknown_event_type(spark, data_root, make_config):
    tables = yambda_tables()
    write_flat(data_root, tables, multi=True)
    path = data_root / "flat" / SIZE / "multi_event.parquet"
    multi = pq.read_table(path)
    types = multi["event_type"].to_pylist()
    types[0], types[7], types[8], types[9] = "play", None, "Like", "play"  # matched exactly
    uid = multi["uid"].to_pylist()
    uid[9] = None  # its reason is the first failing check, yet it counts under kind "unknown"
    pq.write_table(with_column(with_column(multi, "event_type", types), "uid", uid), path)
    config = make_config("data.source=multi_event", "ingest.max_quarantine_share=0.05")
    q = check_quarantined(spark, config, {"unknown_event_type": 3, "null_uid": 1}, multi.num_rows - 4)
    assert sorted(q.column("event_type").to_pylist(), key=str) == ["Like", None, "play", "play"]
    assert stat(config, "rows_in", "unknown") == 4
    assert set(events_of(config).column("event_type").to_pylist()) == set(EVENT_FILES.values())


def test_quarantine_share_above_bound_fails_before_writing(spark, data_root, make_config):
    tables = yambda_tables()
    listens = tables["listens"]
    uid = listens["uid"].to_pylist()
    for i in range(0, 20):
        uid[i] = None  # 20 of ~290 rows: about 7%
    tables["listens"] = with_column(listens, "uid", uid)
    write_flat(data_root, tables)
    expect_input_error(
        spark,
        make_config(),
        "above ingest.max_quarantine_share=0.01",
        "null_uid 20 in flat/t/listens.parquet",
    )


# --- layouts ------------------------------------------------------------------------------------


def test_every_layout_gives_the_same_events(spark, data_root, make_config):
    """Flat separate files, flat multi_event, sequential lists named item_id or item_ids, and
    signed instead of unsigned integers: the same rows, so the same events table."""
    tables = yambda_tables()
    write_flat(data_root / "flat", tables)
    write_flat(data_root / "multi", tables, multi=True)
    write_sequential(data_root / "seq", tables, plural=False)
    write_sequential(data_root / "seqs", tables, plural=True, multi=True)
    write_flat(data_root / "signed", {name: to_signed(t) for name, t in tables.items()})
    layouts = {
        "flat": (),
        "multi": ("data.source=multi_event",),
        "seq": ("data.layout=sequential",),
        "seqs": ("data.layout=sequential", "data.source=multi_event"),
        "signed": (),
    }
    events = {}
    for name, overrides in layouts.items():
        config = make_config(f"data.root={data_root / name}", f"dataset.name={name}", *overrides)
        summary = run_ingest(config, spark)
        assert summary["quarantined"] == {}, name
        events[name] = events_of(config)
    assert events["flat"].num_rows == sum(tables[s].num_rows for s in EVENT_FILES)
    for name, table in events.items():
        assert table.equals(events["flat"]), name


# --- the pure transforms ------------------------------------------------------------------------


def test_first_failing_check_wins_in_documented_order(spark):
    cols = [
        "source_file",
        "event_type",
        "uid",
        "item_id",
        "timestamp",
        "is_organic",
        "played_ratio_pct",
        "track_length_seconds",
    ]
    rows = [
        ("f", "listen", 1, 2, 10, 1, 50, 200),  # good
        ("f", "listen", None, None, None, 1, 50, 200),  # null_uid before null_item_id, null_timestamp
        ("f", "nope", 1, None, 10, 1, 50, 200),  # null_item_id before unknown_event_type
        ("f", "nope", -1, 2, 10, 1, 50, 200),  # unknown_event_type before uid_out_of_range
        ("f", "like", 1, 2**31, 10**9, 1, None, None),  # item_id_out_of_range before timestamp_out_of_range
        ("f", "like", 1, 2, 10, 2, None, None),  # invalid_is_organic
        ("f", "listen", 1, 2, 10, 0, -5, 200),  # played_ratio_pct_out_of_range
        ("f", "listen", 1, 2, 10, 0, 5, 2**32 - 1),  # track_length_seconds_out_of_range
    ]
    df = spark.createDataFrame(
        rows, ", ".join(f"{c} {'string' if c in cols[:2] else 'bigint'}" for c in cols)
    )
    flagged = validate.flag_events(df, timestamp_min=0, timestamp_max=1000)
    reasons = [r["reason"] for r in flagged.collect()]
    assert reasons == [
        None,
        "null_uid",
        "null_item_id",
        "unknown_event_type",
        "item_id_out_of_range",
        "invalid_is_organic",
        "played_ratio_pct_out_of_range",
        "track_length_seconds_out_of_range",
    ]
    clean = validate.clean_events(flagged)
    assert [tuple(r) for r in clean.collect()] == [(1, 2, 10, "listen", True, 50, 200)]
    assert validate.quarantined(flagged).count() == 7
