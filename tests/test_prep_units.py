"""Preprocessing on hand-written histories; every expected value is worked out by hand here.

Two small lakes are built with real Spark + Delta and run through ``run_preprocess`` once
each (module-scoped): one for the §2 filters, sequences and holdout, one for the GTS
boundaries. Pure helpers (chunking, split hash, netting) are tested without Spark.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from conftest import TEST_OVERRIDES
from musicrec.config import load_config
from musicrec.errors import InputError
from musicrec.lake.delta import read_arrow, table_exists, write_table
from musicrec.lake.tables import table_path
from musicrec.prep import build, gts, stats
from musicrec.prep.holdout import user_split
from musicrec.prep.job import OUTPUT_TABLES, run_preprocess

EVENTS_DDL = (
    "uid int, item_id int, artist_id int, album_id int, timestamp long, event_type string, "
    "is_organic boolean, played_ratio_pct int, track_length_seconds int"
)


def event(
    uid: int,
    ts: int,
    item: int,
    artists: dict[int, int | None],
    kind: str = "listen",
    ratio: int | None = 100,
):
    return (uid, item, artists.get(item), None, ts, kind, True, ratio if kind == "listen" else None, 200)


def events_lake(spark, root, rows, *overrides: str):
    """A lake holding only an ``events`` table of ``rows``; its config."""
    config = load_config(
        overrides=(*TEST_OVERRIDES, "runtime.spark.shuffle_partitions=2", f"lake.root={root}", *overrides)
    )
    path = table_path(config.lake.root, config.dataset.name, "events")
    write_table(spark, spark.createDataFrame(rows, EVENTS_DDL), path)
    return config


def run_lake(spark, root, rows, *overrides: str) -> dict[str, pl.DataFrame]:
    """Every output table of preprocessing ``rows``, and the job's summary (one row, key ``summary``)."""
    config = events_lake(spark, root, rows, *overrides)
    summary = run_preprocess(config, spark)
    tables = {
        t: pl.from_arrow(read_arrow(table_path(config.lake.root, config.dataset.name, t))) for t in OUTPUT_TABLES
    }
    return {**tables, "summary": pl.DataFrame([summary])}


def stat(tables, section: str, name: str) -> float:
    rows = tables["stats"].filter((pl.col("section") == section) & (pl.col("name") == name))
    assert rows.height == 1, (section, name)
    return rows["value"][0]


def sequence(tables, protocol: str, uid: int, name: str, k: int) -> tuple[list, list, list] | None:
    rows = tables["sequences"].filter(
        (pl.col("protocol") == protocol)
        & (pl.col("uid") == uid)
        & (pl.col("name") == name)
        & (pl.col("k") == k)
    )
    assert rows.height <= 1
    if rows.height == 0:
        return None
    r = rows.row(0, named=True)
    return r["items"], r["timestamps"], r["positions"]


# ---------------------------------------------------------------- filters, sequences, holdout

# Tracks 10, 11 -> artist 100; 12 unmapped; 13 -> 101. 50, 99, 77 are never popular.
HOLDOUT_ARTISTS = {10: 100, 11: 100, 12: None, 13: 101, 50: 150, 99: 199, 77: 177}


def holdout_rows() -> list[tuple]:
    a = HOLDOUT_ARTISTS
    user1 = [  # deliberately not in time order; (200, 11) before (200, 10) in the input
        event(1, 700, 12, a),
        event(1, 600, 11, a),
        event(1, 500, 10, a),
        event(1, 500, 10, a),  # an identical event: both kept
        event(1, 400, 12, a),
        event(1, 300, 10, a, ratio=20),  # exactly the consumption threshold: kept
        event(1, 200, 11, a),
        event(1, 200, 10, a),
        event(1, 100, 13, a),  # oldest of 9 kept listens: cut by max_len = 8
        event(1, 650, 13, a, ratio=19),  # below the threshold
        event(1, 660, 10, a, ratio=None),  # null ratio
        event(1, 650, 13, a, kind="like"),  # not a listen: never in H(u)
    ]
    user2 = [
        event(2, 50, 50, a),
        *(event(2, t, i, a) for t, i in ((100, 10), (110, 13), (120, 11), (130, 12))),
    ]
    user3 = [
        event(3, 50, 50, a),
        *(event(3, t, i, a) for t, i in ((100, 11), (110, 10), (120, 13), (130, 99))),
    ]
    user4 = [event(4, 100, 10, a), event(4, 110, 11, a)]  # below min_len = 3
    user5 = [event(5, 100, 10, a, ratio=5), event(5, 110, 11, a, ratio=None)]  # nothing passes consumption
    user6 = [event(6, t, 77, a) for t in (100, 110, 120)]  # only an unpopular track
    return [*user1, *user2, *user3, *user4, *user5, *user6]


@pytest.fixture(scope="module")
def holdout_lake(spark, tmp_path_factory):
    # Recent windows (last 3 kept listens): u1 {10,11,12}, u2 {13,11,12}, u3 {10,13,99}, u4 {10,11},
    # u6 {77}; with min_users = 2 the popular tracks are 10, 11, 12, 13. Every user is "val".
    return run_lake(
        spark,
        tmp_path_factory.mktemp("holdout") / "lake",
        holdout_rows(),
        "preprocess.popularity.recent_window=3",
        "preprocess.popularity.min_users=2",
        "preprocess.min_len=3",
        "preprocess.max_len=8",
        "preprocess.ks=[1,3]",
        "holdout.gt_size=2",
        "holdout.split_ratios=[0.0,1.0,0.0]",
    )


def test_filter_counts(holdout_lake):
    expected = {
        # 28 listens of 6 users; u1 and u5 each lose one null and one below-threshold listen.
        "consumption": {"rows_in": 28, "rows_out": 24, "users_in": 6, "users_out": 5},
        # 50 (old listens of u2, u3), 99 (u3) and 77 (3 of u6) go; u6 has nothing left.
        "popularity": {"rows_in": 24, "rows_out": 18, "users_in": 5, "users_out": 4},
        # u4 has 2 < 3 listens; u1 keeps its 8 most recent of 9.
        "length": {"rows_in": 18, "rows_out": 15, "users_in": 4, "users_out": 3},
    }
    for name, counts in expected.items():
        for key, value in counts.items():
            assert stat(holdout_lake, "filter", f"{name}/{key}") == value, (name, key)
    assert stat(holdout_lake, "filter", "consumption/rows_null_ratio") == 2
    assert stat(holdout_lake, "filter", "consumption/rows_below_min_ratio") == 2
    assert stat(holdout_lake, "filter", "popularity/tracks_in_recent_windows") == 6  # 10 11 12 13 99 77
    assert stat(holdout_lake, "filter", "popularity/tracks_kept") == 4
    assert stat(holdout_lake, "filter", "length/users_below_min_len") == 1
    assert stat(holdout_lake, "filter", "length/rows_truncated_max_len") == 1
    assert sorted(holdout_lake["user_splits"]["uid"]) == [1, 2, 3]


def test_sequences_of_user_1(holdout_lake):
    # H(1) = (200,10) (200,11) (300,10) (400,12) (500,10) (500,10) (600,11) (700,12): the tie at 200 is
    # ordered by item_id, the duplicate at 500 kept, (100,13) cut by max_len; artists 100 except 12.
    ts = [200, 200, 300, 400, 500, 500, 600, 700]
    expected = {
        ("lh_track", 1): ([10, 11, 10, 12, 10, 10, 11, 12], list(range(8))),
        ("disc_track", 1): ([10, 11, 12], [0, 1, 3]),
        ("fam_track", 1): ([10, 10, 10, 11, 12], [2, 4, 5, 6, 7]),
        # k = 3: only track 10 (4 listens) occurs at least 3 times.
        ("lh_track", 3): ([10, 10, 10, 10], [0, 2, 4, 5]),
        ("disc_track", 3): ([10], [0]),
        ("fam_track", 3): ([10, 10, 10], [2, 4, 5]),
        # Artist sequences skip the unmapped track 12 at positions 3 and 7; artist 100 occurs 6 times.
        ("lh_artist", 1): ([100] * 6, [0, 1, 2, 4, 5, 6]),
        ("disc_artist", 1): ([100], [0]),
        ("fam_artist", 1): ([100] * 5, [1, 2, 4, 5, 6]),
        ("lh_artist", 3): ([100] * 6, [0, 1, 2, 4, 5, 6]),
        ("disc_artist", 3): ([100], [0]),
        ("fam_artist", 3): ([100] * 5, [1, 2, 4, 5, 6]),
    }
    for (name, k), (items, positions) in expected.items():
        got = sequence(holdout_lake, "holdout", 1, name, k)
        assert got == (items, [ts[p] for p in positions], positions), (name, k)
    splits = holdout_lake["sequences"].filter(pl.col("protocol") == "holdout")["split"].unique().to_list()
    assert splits == ["val"]


def test_empty_sequences_get_no_row_and_are_counted(holdout_lake):
    # u2 = 10 13 11 12 and u3 = 11 10 13 never repeat a track: no fam_track rows, no track rows at k = 3.
    assert sequence(holdout_lake, "holdout", 2, "fam_track", 1) is None
    assert sequence(holdout_lake, "holdout", 3, "lh_track", 3) is None
    assert sequence(holdout_lake, "holdout", 2, "disc_track", 1) == (
        [10, 13, 11, 12],
        [100, 110, 120, 130],
        [0, 1, 2, 3],
    )
    assert sequence(holdout_lake, "holdout", 2, "lh_artist", 1) == (
        [100, 101, 100],
        [100, 110, 120],
        [0, 1, 2],
    )
    assert stat(holdout_lake, "sequences", "holdout/fam_track/k=1/users") == 1
    assert stat(holdout_lake, "sequences", "holdout/fam_track/k=1/empty_users") == 2
    assert stat(holdout_lake, "sequences", "holdout/lh_track/k=1/elements") == 15
    assert stat(holdout_lake, "sequences", "holdout/lh_track/k=1/max_len") == 8
    assert stat(holdout_lake, "sequences", "holdout/lh_track/k=1/median_len") == 4
    assert stat(holdout_lake, "sequences", "holdout/lh_track/k=1/items") == 4
    assert stat(holdout_lake, "sequences", "holdout/disc_artist/k=1/items") == 2
    assert stat(holdout_lake, "sequences", "holdout/fam_track/k=1/items") == 3  # u1 repeats 10, 11, 12
    assert stat(holdout_lake, "sequences", "holdout/fam_track/k=3/items") == 1  # only 10 reaches 3 listens
    assert stat(holdout_lake, "sequences", "holdout/disc_track/k=3/users") == 1
    assert stat(holdout_lake, "artists", "holdout/unmapped_events") == 3  # u1 twice, u2 once
    assert stat(holdout_lake, "users", "holdout") == 3


def test_holdout_examples(holdout_lake):
    got = {
        (r["uid"], r["task"]): (r["history_items"], r["history_timestamps"], r["targets"], r["split"])
        for r in holdout_lake["holdout_examples"].iter_rows(named=True)
    }
    assert got == {
        # u1 T1: discoveries 10@0 11@1 12@3; ground truth the last 2, cutoff at position 1.
        (1, "T1"): ([10], [200], [11, 12], "val"),
        # u1 T2: repeats at 2 4 5 6 7; last 2 = 11@6 12@7; input H[:6].
        (1, "T2"): ([10, 11, 10, 12, 10, 10], [200, 200, 300, 400, 500, 500], [11, 12], "val"),
        # u1 T4: artist repeats at 1 2 4 5 6; last 2 at 5, 6; input = mapped artists of H[:5].
        (1, "T4"): ([100, 100, 100, 100], [200, 200, 300, 500], [100, 100], "val"),
        (2, "T1"): ([10, 13], [100, 110], [11, 12], "val"),
        (3, "T1"): ([11], [100], [10, 13], "val"),
    }
    expected_counts = {
        "T1/val/evaluated": 3,
        "T2/val/evaluated": 1,
        "T2/val/skipped_too_few_task_events": 2,  # u2, u3 repeat nothing
        "T3/val/evaluated": 0,
        "T3/val/skipped_too_few_task_events": 1,  # u1 discovers one artist only
        "T3/val/skipped_empty_history": 2,  # u2, u3: ground truth starts at position 0
        "T4/val/evaluated": 1,
        "T4/val/skipped_too_few_task_events": 2,
        "T1/test/evaluated": 0,
        "users/val": 3,
        "users/train": 0,
    }
    for name, value in expected_counts.items():
        assert stat(holdout_lake, "holdout", name) == value, name


def test_duplicates_and_unmapped_artists_are_counted_and_summarised(holdout_lake):
    lh = holdout_lake["sequences"].filter(
        (pl.col("protocol") == "holdout") & (pl.col("k") == 1) & pl.col("name").is_in(["lh_track", "lh_artist"])
    )
    tracks = lh.filter(pl.col("name") == "lh_track")
    # Independently from H(u) as written (lh_track): neighbours with the same item at the same second.
    duplicates = sum(
        sum(items[i] == items[i - 1] and ts[i] == ts[i - 1] for i in range(1, len(items)))
        for items, ts in zip(tracks["items"].to_list(), tracks["timestamps"].to_list(), strict=True)
    )
    assert duplicates == 1  # user 1's two identical listens at 500, both kept
    assert stat(holdout_lake, "histories", "duplicate_listens") == duplicates
    summary = holdout_lake["summary"].row(0, named=True)
    assert summary["duplicate_listens"] == duplicates
    # Listens without an artist are those of lh_track missing from lh_artist.
    in_histories = int(tracks["items"].list.len().sum())
    unmapped = in_histories - int(lh.filter(pl.col("name") == "lh_artist")["items"].list.len().sum())
    assert unmapped > 0 and summary["listens_in_histories"] == in_histories
    assert summary["listens_without_artist"].startswith(f"{unmapped} of {in_histories} (")


def _no_outputs(config) -> bool:
    """No output table has a committed version (staged files, if any, are invisible)."""
    return not any(table_exists(table_path(config.lake.root, config.dataset.name, t)) for t in OUTPUT_TABLES)


def test_no_listens_is_a_clear_error(spark, tmp_path):
    a = HOLDOUT_ARTISTS
    config = events_lake(spark, tmp_path / "lake", [event(1, 100 + t, 10, a, kind="like") for t in range(5)])
    with pytest.raises(InputError, match="holds no listen events") as info:
        run_preprocess(config, spark)
    assert "\n" not in str(info.value)
    assert _no_outputs(config)


def test_filters_that_leave_no_user_are_a_clear_error(spark, tmp_path):
    a = HOLDOUT_ARTISTS
    rows = [event(1, 100, 10, a), event(1, 110, 11, a), event(2, 100, 10, a)]  # fewer than min_len = 3 each
    config = events_lake(spark, tmp_path / "lake", rows, "preprocess.min_len=3", "preprocess.popularity.min_users=1")
    with pytest.raises(InputError, match="no user is left after the filters") as info:
        run_preprocess(config, spark)
    assert "length 3 -> 0 listens" in str(info.value) and "\n" not in str(info.value)
    assert _no_outputs(config)


# ---------------------------------------------------------------- global temporal split

# last_timestamp 100000, test_size 1000, gap 100, val_size 500:
# val train < 98300 <= val gap < 98400 <= val window < 98900 <= test gap < 99000 <= test window < 100000.
GTS_ARTISTS = {i: 1000 + i for i in range(1, 40) if i != 9}  # track 9 unmapped


def gts_rows() -> list[tuple]:
    a = GTS_ARTISTS
    listens = [
        (98299, 1),  # last second of the val stage's training
        (98300, 2),  # first second of the val gap
        (98399, 3),  # last second of the val gap
        (98400, 4),  # first second of the val window
        (98500, 1),
        (98899, 5),  # last second of the val window
        (98900, 6),  # first second of the test gap
        (98999, 7),  # last second of the test gap
        (99000, 8),  # first second of the test window
        (99500, 4),
        (99999, 9),  # last second of the test window (unmapped artist)
        (100000, 10),  # test_end itself: outside every split
    ]
    rows = [event(10, t, i, a) for t, i in listens]
    rows += [event(10, 99200, 30, a, ratio=49), event(10, 99300, 31, a, ratio=50)]  # Listen+ needs >= 50
    rows += [
        event(10, t, i, a, kind="like") for t, i in ((98000, 20), (98900, 22), (99000, 21), (100000, 24))
    ]
    rows += [event(11, 99100, 40, a), event(11, 99100, 23, a, kind="like")]  # no training events
    return rows


@pytest.fixture(scope="module")
def gts_lake(spark, tmp_path_factory):
    return run_lake(
        spark,
        tmp_path_factory.mktemp("gts") / "lake",
        gts_rows(),
        "gts.last_timestamp=100000",
        "gts.test_size=1000",
        "gts.gap=100",
        "gts.val_size=500",
        "preprocess.ks=[1]",
        "preprocess.popularity.min_users=1",
    )


def test_gts_window_boundaries(gts_lake):
    boundaries = {
        "val_train_end": 98300,
        "val_start": 98400,
        "val_end": 98900,
        "test_train_end": 98900,
        "test_start": 99000,
        "test_end": 100000,
    }
    for name, value in boundaries.items():
        assert stat(gts_lake, "gts", f"boundaries/{name}") == value, name


def test_gts_training_sequences(gts_lake):
    assert sequence(gts_lake, "gts_val_listen_plus", 10, "lh_track", 1) == ([1], [98299], [0])
    # The test stage trains on everything before its gap, the val window and val gap included.
    assert sequence(gts_lake, "gts_test_listen_plus", 10, "lh_track", 1) == (
        [1, 2, 3, 4, 1, 5],
        [98299, 98300, 98399, 98400, 98500, 98899],
        [0, 1, 2, 3, 4, 5],
    )
    assert sequence(gts_lake, "gts_test_listen_plus", 10, "fam_track", 1) == ([1], [98500], [4])
    assert sequence(gts_lake, "gts_test_like", 10, "lh_track", 1) == ([20], [98000], [0])
    assert sequence(gts_lake, "gts_val_like", 10, "lh_track", 1) == ([20], [98000], [0])
    gts_protocols = gts_lake["sequences"].filter(pl.col("protocol").str.starts_with("gts_"))
    assert set(gts_protocols["uid"]) == {10}  # user 11 has no training event
    assert set(gts_protocols["split"]) == {"train"}


def test_gts_examples(gts_lake):
    got = {
        (r["window"], r["feedback"], r["task"]): r["targets"]
        for r in gts_lake["gts_examples"].filter(pl.col("uid") == 10).iter_rows(named=True)
    }
    assert got == {
        ("val", "listen_plus", "next_track"): [1, 4, 5],
        ("val", "listen_plus", "T1"): [4, 5],
        ("val", "listen_plus", "T2"): [1],
        ("val", "listen_plus", "next_artist"): [1001, 1004, 1005],
        ("val", "listen_plus", "T3"): [1004, 1005],
        ("val", "listen_plus", "T4"): [1001],
        ("test", "listen_plus", "next_track"): [4, 8, 9, 31],
        ("test", "listen_plus", "T1"): [8, 9, 31],
        ("test", "listen_plus", "T2"): [4],
        ("test", "listen_plus", "next_artist"): [1004, 1008, 1031],
        ("test", "listen_plus", "T3"): [1008, 1031],
        ("test", "listen_plus", "T4"): [1004],
        ("test", "like", "next_track"): [21],
        ("test", "like", "T1"): [21],
        ("test", "like", "next_artist"): [1021],
        ("test", "like", "T3"): [1021],
    }
    assert gts_lake["gts_examples"].filter(pl.col("uid") == 11).height == 0
    assert stat(gts_lake, "gts", "test/listen_plus/users_dropped_no_train") == 1
    assert stat(gts_lake, "gts", "test/like/users_dropped_no_train") == 1
    assert stat(gts_lake, "gts", "val/listen_plus/users_dropped_no_train") == 0
    assert stat(gts_lake, "gts", "test/like/T2/empty_targets") == 1
    assert stat(gts_lake, "gts", "val/like/users_without_window_events") == 1


# ---------------------------------------------------------------- pure helpers


def test_plan_windows_defaults_to_max_timestamp_plus_one(config_for):
    windows = gts.plan_windows(config_for("gts.val_size=0").gts, 200_000)
    assert windows == gts.Windows(200_001, (gts.Window("test", 113_601, 200_001, 111_801),))


def _batch(uids: list[int], ts: list[int]) -> pa.RecordBatch:
    n = len(uids)
    return pa.RecordBatch.from_pydict(
        {
            "uid": pa.array(uids, pa.int32()),
            "timestamp": pa.array(ts, pa.int64()),
            "item_id": pa.array([1] * n, pa.int32()),
            "artist_id": pa.array([-1] * n, pa.int32()),
            "code": pa.array([0] * n, pa.int8()),
        }
    )


def test_user_chunks_never_split_a_user():
    # User 2 spans three batches. Once 3 rows are buffered, everything but the last user is emitted.
    batches = [
        _batch([1, 1, 2], [1, 2, 1]),
        _batch([2, 2], [2, 3]),
        _batch([2, 3, 4], [4, 1, 1]),
        _batch([4], [2]),
    ]
    chunks = [c.column("uid").to_pylist() for c in build.user_chunks(batches, chunk_rows=3)]
    assert chunks == [[1, 1], [2, 2, 2, 2, 3], [4, 4]]


def test_unsorted_input_fails_loudly():
    with pytest.raises(RuntimeError, match="canonical"):
        build.Histories.from_table(pa.Table.from_batches([_batch([1, 1], [5, 4])]))
    with pytest.raises(RuntimeError, match="sorted by uid"):
        list(build.user_chunks([_batch([2], [1]), _batch([1], [1])], chunk_rows=1))


def _splitmix64_reference(x: int) -> int:
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_user_split_follows_the_documented_hash():
    uids = np.array([0, 1, 7, 123_456, 2**31 - 1])
    ratios = (0.9, 0.05, 0.05)
    for seed in (0, 42, 2**40 + 3):
        expected = []
        for uid in uids.tolist():
            u = (_splitmix64_reference(((seed << 32) + uid) & ((1 << 64) - 1)) >> 11) / 2**53
            expected.append(0 if u < 0.9 else 1 if u < 0.9 + 0.05 else 2)
        assert user_split(uids, seed, ratios).tolist() == expected
    shares = np.bincount(user_split(np.arange(200_000), 42, ratios), minlength=3) / 200_000
    assert np.allclose(shares, ratios, atol=0.005)
    assert (user_split(np.arange(1000), 1, ratios) != user_split(np.arange(1000), 2, ratios)).any()


def test_netting_cancels_a_like_followed_by_an_unlike():
    # Same user: item 5 liked (t=1), unliked (t=2), liked again (t=3); item 6 liked and unliked at the
    # same second (an unlike sorts after a like); item 7 liked twice, unliked once at the end.
    rows = [(1, 5, 2), (2, 5, 3), (3, 5, 2), (4, 6, 2), (4, 6, 3), (5, 7, 2), (6, 7, 2), (7, 7, 3)]
    h = build.Histories(
        uid=np.array([1], dtype=np.int32),
        group=np.zeros(len(rows), dtype=np.int64),
        timestamp=np.array([r[0] for r in rows], dtype=np.int64),
        item=np.array([r[1] for r in rows], dtype=np.int32),
        artist=np.full(len(rows), -1, dtype=np.int32),
        code=np.array([r[2] for r in rows], dtype=np.int8),
        position=np.arange(len(rows), dtype=np.int32),
    )
    kept = gts.kept_likes(h)
    assert kept.tolist() == [False, False, True, False, False, True, False, False]


def test_events_at_or_after_test_end_are_counted(gts_lake):
    # docs/temporal-split.md: events at or after test_end belong to no split; every event type counts.
    expected = sum(1 for row in gts_rows() if row[4] >= 100_000)
    assert expected == 2  # the listen and the like at test_end itself
    assert stat(gts_lake, "gts", "events_at_or_after_test_end") == expected


def test_no_events_after_the_default_test_end(holdout_lake):
    # The default test_end is the largest timestamp plus one.
    assert stat(holdout_lake, "gts", "events_at_or_after_test_end") == 0


def test_threshold_counts_merge_partial_maxima_across_rows_and_batches():
    parts = [
        ("holdout", "track", [5, 7, 9], [1, 3, 2]),
        ("holdout", "track", [7, 11], [1, 2]),
        ("holdout", "artist", [0, 2], [5, 1]),
        ("gts_test_like", "track", [], []),
        ("holdout", "track", [9, 400000], [5, 1]),
    ]
    schema = build.OUTPUT_SCHEMA
    rows = [{"protocol": p, "name": n, "items": i, "maxima": m} for p, n, i, m in parts]
    batches = [pa.RecordBatch.from_pylist(rows[:2], schema=schema), pa.RecordBatch.from_pylist(rows[2:], schema=schema)]
    got = {}
    for out in stats.threshold_counts([1, 2, 5])(iter(batches)):
        for r in out.to_pylist():
            got[(r["protocol"], r["name"], r["threshold"])] = r["items"]
    # Brute force: each item's largest partial maximum, then items at or above each threshold.
    largest: dict[tuple[str, str], dict[int, int]] = {}
    for p, n, items, maxima in parts:
        for item, m in zip(items, maxima, strict=True):
            largest.setdefault((p, n), {})[item] = max(largest.get((p, n), {}).get(item, 0), m)
    expected = {(p, n, t): sum(m >= t for m in ms.values()) for (p, n), ms in largest.items() for t in (1, 2, 5)}
    assert got == expected
    assert got[("holdout", "track", 2)] == 3  # 7 (3), 9 (5), 11 (2)


def _chunk(users: dict[int, list[tuple[int, int]]]) -> build.Histories:
    """Histories of ``{uid: [(track, artist), ...]}`` in time order."""
    rows = [(uid, t, item, artist) for uid, events in users.items() for t, (item, artist) in enumerate(events)]
    return build.Histories.from_table(
        pa.table(
            {
                "uid": pa.array([r[0] for r in rows], pa.int32()),
                "timestamp": pa.array([r[1] for r in rows], pa.int64()),
                "item_id": pa.array([r[2] for r in rows], pa.int32()),
                "artist_id": pa.array([r[3] for r in rows], pa.int32()),
                "code": pa.array([0] * len(rows), pa.int8()),
            }
        )
    )


def _brute_sequence(items: list[int], kind: str, k: int) -> list[int]:
    """Paper 000's sequences the slow way: lh every item, disc first listens, fam repeats; k-condensed."""
    valid = [i for i in items if i >= 0]
    seen: set[int] = set()
    out = []
    for item in valid:
        first = item not in seen
        seen.add(item)
        if valid.count(item) >= k and {"lh": True, "disc": first, "fam": not first}[kind]:
            out.append(item)
    return out


def test_sequence_stats_are_the_lengths_and_item_maxima_of_the_sequences():
    chunks = [
        {1: [(5, 0), (5, 0), (7, 2), (5, 0)], 2: [(7, 2), (7, -1), (7, 2)]},
        {3: [(9, 0), (5, -1)], 4: [(7, 2)]},
        {6: [(5, 0), (900000, 3), (5, 0), (7, 3)], 7: [(8, 1)] * 4},
    ]
    ks = (1, 2, 3)
    seq_stats = build.SequenceStats(ks)
    batches = [b for c in chunks for b in seq_stats.add(_chunk(c), "holdout")] + list(seq_stats.finish())
    lengths: dict[tuple[str, int, int], int] = {}
    maxima: dict[tuple[str, int], int] = {}
    for r in pa.Table.from_batches(batches).to_pylist():
        assert r["protocol"] == "holdout"
        if r["tag"] == "lengths":
            key = (r["name"], r["k"], r["value"])
            lengths[key] = lengths.get(key, 0) + r["users"]
        else:
            assert r["tag"] == "maxima"
            assert len(set(r["items"])) == len(r["items"])  # each item once per partition
            for item, m in zip(r["items"], r["maxima"], strict=True):
                maxima[(r["name"], item)] = m
    expected_lengths: dict[tuple[str, int, int], int] = {}
    expected_maxima: dict[tuple[str, int], int] = {}
    for users in chunks:
        for events in users.values():
            for domain, items in (("track", [t for t, _ in events]), ("artist", [a for _, a in events])):
                for item in {i for i in items if i >= 0}:
                    # Capped at the largest threshold of ks, the most the stats need.
                    m = min(items.count(item), max(ks))
                    expected_maxima[(domain, item)] = max(expected_maxima.get((domain, item), 0), m)
                for kind in ("lh", "disc", "fam"):
                    for k in ks:
                        n = len(_brute_sequence(items, kind, k))
                        if n:
                            key = (f"{kind}_{domain}", k, n)
                            expected_lengths[key] = expected_lengths.get(key, 0) + 1
    assert lengths == expected_lengths
    assert maxima == expected_maxima
