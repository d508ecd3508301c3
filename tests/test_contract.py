"""The contract module against the spec's tables (docs/tasks.md §5, docs/tables.md)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from musicrec.contract import (
    EVENT_TYPES,
    GTS_TASKS,
    HOLDOUT,
    HOLDOUT_TASKS,
    PROTOCOLS,
    SEQUENCE_NAMES,
    TASKS,
    Protocol,
    parse_name,
)
from musicrec.contract.schemas import SCHEMAS, spark_schema
from musicrec.lake.tables import PARTITIONING


def test_tasks_match_the_spec_table():
    # (domain, ground-truth sequence, candidate filter, GTS relation to the train history)
    spec = {
        "T1": ("track", "disc_track", "exclude", "absent"),
        "T2": ("track", "fam_track", "only", "present"),
        "T3": ("artist", "disc_artist", "exclude", "absent"),
        "T4": ("artist", "fam_artist", "only", "present"),
        "next_track": ("track", "lh_track", None, None),
        "next_artist": ("artist", "lh_artist", None, None),
    }
    assert {n: (t.domain, t.truth, t.filter, t.relation) for n, t in TASKS.items()} == spec
    assert HOLDOUT_TASKS == ("T1", "T2", "T3", "T4")
    assert GTS_TASKS == ("next_track", "next_artist", "T1", "T2", "T3", "T4")
    assert TASKS["T3"].history == "lh_artist"


def test_sequence_names():
    assert SEQUENCE_NAMES == ("lh_track", "disc_track", "fam_track", "lh_artist", "disc_artist", "fam_artist")
    assert parse_name("fam_artist") == ("fam", "artist")
    with pytest.raises(ValueError, match="unknown sequence name 'disc_album'"):
        parse_name("disc_album")


def test_protocol_names_round_trip():
    names = ["holdout", "gts_val_listen_plus", "gts_val_like", "gts_test_listen_plus", "gts_test_like"]
    assert [p.name for p in PROTOCOLS] == names
    assert [Protocol.parse(n) for n in names] == list(PROTOCOLS)
    assert Protocol.parse("gts_test_listen_plus") == Protocol.gts("test", "listen_plus")
    assert str(Protocol.gts("val", "like")) == "gts_val_like"
    assert Protocol.parse("holdout") is HOLDOUT and HOLDOUT.tasks == HOLDOUT_TASKS
    assert Protocol.gts("val", "like").tasks == GTS_TASKS
    for bad in ("gts_train_like", "gts_val_likes", "gts_val", "holdout_val", "listen_plus"):
        with pytest.raises(ValueError, match="unknown protocol"):
            Protocol.parse(bad)
    with pytest.raises(ValueError, match="GTS feedback"):
        Protocol.gts("val", "skip")


def test_event_types():
    assert EVENT_TYPES == ("listen", "like", "dislike", "unlike", "undislike")


def test_every_lake_table_has_a_schema_and_its_partition_columns():
    assert set(SCHEMAS) == set(PARTITIONING)
    for table, columns in PARTITIONING.items():
        assert set(columns) <= set(SCHEMAS[table].names), table
        assert all(f.nullable for f in SCHEMAS[table]), table


def test_spark_schemas_are_derived_from_arrow():
    # The DDL the jobs declared by hand before the contract existed.
    assert spark_schema("sequences").simpleString() == (
        "struct<protocol:string,uid:int,name:string,k:int,split:string,"
        "items:array<int>,timestamps:array<bigint>,positions:array<int>>"
    )
    assert spark_schema("stats").simpleString() == (
        "struct<section:string,name:string,value:double,detail:string,job:string>"
    )
    assert spark_schema("events").simpleString() == (
        "struct<uid:int,item_id:int,artist_id:int,album_id:int,timestamp:bigint,event_type:string,"
        "is_organic:boolean,played_ratio_pct:int,track_length_seconds:int>"
    )
    assert all(f.nullable for f in spark_schema("quarantine").fields)
    assert spark_schema(pa.schema([("x", pa.list_(pa.int64()))])).simpleString() == "struct<x:array<bigint>>"
