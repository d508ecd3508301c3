"""The synthetic Yambda generator: format, determinism, and the statistics the papers need.

Every statistic is recomputed here from the written parquet files, never read from the summary
(except to check that the summary agrees with the recomputation)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from musicrec.bench.generate import bench_generate
from musicrec.data import generator as gen
from musicrec.data.generator import GeneratorParams, generate, preset

FEEDBACK = ("likes", "dislikes", "unlikes", "undislikes")
FLAT = ("listens", *FEEDBACK, "multi_event")
U32 = pa.uint32()
LISTEN_TYPES = {
    "uid": U32,
    "item_id": U32,
    "timestamp": U32,
    "is_organic": pa.uint8(),
    "played_ratio_pct": pa.uint16(),
    "track_length_seconds": U32,
}
FEEDBACK_TYPES = {k: LISTEN_TYPES[k] for k in ("uid", "item_id", "timestamp", "is_organic")}

# Big enough for stable statistics (~150k listens in 3 chunks), small enough for well under a second.
MID = GeneratorParams(
    name="mid",
    n_users=300,
    n_items=8_000,
    median_history=260,
    n_artists=1_000,
    n_genres=10,
    chunk_users=100,
    write_sequential=True,
)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flat(root: Path, params: GeneratorParams, name: str) -> pd.DataFrame:
    table = pq.read_table(root / "flat" / params.name / f"{name}.parquet")
    return pd.DataFrame({c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names})


def by_item_id(params: GeneratorParams, attribute: str) -> np.ndarray:
    """A catalogue attribute (internal track order) indexed by the external item id."""
    cat = gen._build_catalogue(params)
    out = np.empty(params.n_items, dtype=np.int64)
    out[cat.item_id] = getattr(cat, attribute)
    return out


def first_listen(listens: pd.DataFrame) -> np.ndarray:
    """True where the user hears the track for the first time (files are in time order)."""
    key = listens.uid.to_numpy().astype(np.int64) << 32 | listens.item_id.to_numpy()
    return ~pd.Series(key).duplicated().to_numpy()


@pytest.fixture(scope="module")
def mid(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mid")
    return root, generate(MID, root, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tiny")
    return root, generate(preset("tiny"), root, progress=False)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(tiny, tmp_path):
    root, _ = tiny
    generate(preset("tiny"), tmp_path, progress=False)
    first, second = files(root), files(tmp_path)
    assert sorted(first) == sorted(second)
    assert len(first) == 2 * len(FLAT) + 4  # flat + sequential + 2 mappings, embeddings, summary
    for name in first:
        assert first[name] == second[name], name


def test_different_seed_gives_different_data(tiny, tmp_path):
    root, _ = tiny
    generate(preset("tiny", seed=1), tmp_path, progress=False)
    a = pq.read_table(root / "flat/tiny/listens.parquet")
    b = pq.read_table(tmp_path / "flat/tiny/listens.parquet")
    assert not a.equals(b)
    assert (root / "embeddings.parquet").read_bytes() != (tmp_path / "embeddings.parquet").read_bytes()


def test_worker_processes_do_not_change_the_bytes(mid, tmp_path):
    root, _ = mid
    generate(replace(MID, workers=2), tmp_path, progress=False)
    ours, theirs = files(root), files(tmp_path)
    ours.pop("generator_summary.json"), theirs.pop("generator_summary.json")  # records `workers`
    assert ours == theirs


def test_tiny_is_small_and_complete(tmp_path):
    """Downstream tests run on tiny: every file and edge case must appear in it (its speed is
    measured by ``musicrec bench generate --sizes tiny``, not asserted here)."""
    summary = generate(preset("tiny"), tmp_path, progress=False)
    listens = flat(tmp_path, preset("tiny"), "listens")
    assert 100 <= len(listens) <= 2_000 and listens.uid.nunique() == summary["n_users"] <= 50
    assert all(summary["counts"][name] > 0 for name in FLAT)
    artists = pq.read_table(tmp_path / "artist_item_mapping.parquet").to_pandas()
    per_item = artists.groupby("item_id").size()
    heard = set(listens.item_id)
    assert heard - set(per_item.index) and heard & set(per_item[per_item > 1].index)


# ----------------------------------------------------------------------------- format


def test_layout_and_types(mid):
    root, _ = mid
    for name in FLAT:
        schema = pq.read_schema(root / "flat/mid" / f"{name}.parquet")
        expected = FEEDBACK_TYPES if name in FEEDBACK else LISTEN_TYPES
        if name == "multi_event":
            expected = {**LISTEN_TYPES, "event_type": pa.string()}
        assert dict(zip(schema.names, schema.types, strict=True)) == expected, name
    for name, types in (
        ("artist_item_mapping", {"artist_id": U32, "item_id": U32}),
        ("album_item_mapping", {"album_id": U32, "item_id": U32}),
        (
            "embeddings",
            {"item_id": U32, "embed": pa.list_(pa.float32()), "normalized_embed": pa.list_(pa.float32())},
        ),
    ):
        schema = pq.read_schema(root / f"{name}.parquet")
        assert dict(zip(schema.names, schema.types, strict=True)) == types, name


def test_sorted_timestamps_and_ids(mid):
    root, summary = mid
    span = (MID.days + 1) * 86_400
    for name in FLAT:
        df = flat(root, MID, name)
        assert len(df) > 0, name
        key = df[["uid", "timestamp", "item_id"]].to_numpy().astype(np.int64)
        steps = np.diff(key, axis=0)
        # lexicographic (uid, timestamp, item_id) order: the first non-zero difference is positive
        first_nonzero = np.take_along_axis(steps, (steps != 0).argmax(axis=1)[:, None], axis=1)
        assert (first_nonzero >= 0).all(), name
        ts = df.timestamp.to_numpy()
        assert (ts % 5 == 0).all() and ts.min() >= 0 and ts.max() < span, name
        assert df.uid.max() < 2**31 and df.item_id.max() < MID.n_items <= 2**31, name
        assert set(np.unique(df.is_organic)) <= {0, 1}, name
    listens = flat(root, MID, "listens")
    assert listens.timestamp.max() > span - 86_400  # the final test day has listens
    assert summary["max_timestamp"] == listens.timestamp.max()


def test_multi_event_is_the_union_of_the_event_files(mid):
    root, summary = mid
    multi = flat(root, MID, "multi_event")
    parts = {name: flat(root, MID, name) for name in ("listens", *FEEDBACK)}
    assert len(multi) == sum(len(df) for df in parts.values()) == summary["counts"]["multi_event"]
    for name, df in parts.items():
        rows = multi[multi.event_type == name.rstrip("s")].drop(columns="event_type").reset_index(drop=True)
        assert summary["counts"][name] == len(df) > 0, name
        if name == "listens":
            pd.testing.assert_frame_equal(rows, df)
        else:
            pd.testing.assert_frame_equal(rows[df.columns.tolist()], df)
            assert rows.played_ratio_pct.isna().all() and rows.track_length_seconds.isna().all()
    # a reaction is at most once per (user, track)
    for name in ("likes", "dislikes"):
        assert not parts[name].duplicated(["uid", "item_id"]).any()


def test_sequential_files_match_flat(mid):
    root, _ = mid
    for name in FLAT:
        seq = pq.read_table(root / "sequential/mid" / f"{name}.parquet")
        uid = seq["uid"].to_numpy()
        assert seq["uid"].type == U32 and len(np.unique(uid)) == len(uid), name
        lists = {c: seq[c].combine_chunks() for c in seq.column_names[1:]}
        lengths = lists["item_id"].value_lengths().to_numpy()
        assert all(np.array_equal(col.value_lengths().to_numpy(), lengths) for col in lists.values()), name
        exploded = pd.DataFrame(
            {
                "uid": np.repeat(uid, lengths),
                **{c: col.flatten().to_numpy(zero_copy_only=False) for c, col in lists.items()},
            }
        )
        pd.testing.assert_frame_equal(exploded, flat(root, MID, name), check_dtype=False)


def test_catalogue_files(mid):
    root, summary = mid
    artists = pq.read_table(root / "artist_item_mapping.parquet").to_pandas()
    albums = pq.read_table(root / "album_item_mapping.parquet").to_pandas()
    emb = pq.read_table(root / "embeddings.parquet")
    items = np.arange(MID.n_items)
    assert np.array_equal(np.sort(albums.item_id), items) and np.array_equal(emb["item_id"].to_numpy(), items)
    assert not artists.duplicated().any()
    per_item = artists.groupby("item_id").size()
    multi = (per_item >= 2).sum() / MID.n_items
    unmapped = MID.n_items - len(per_item)
    assert 0.02 <= multi <= 0.06 and summary["multi_artist_share"] == pytest.approx(multi)
    assert 0 < unmapped <= 0.01 * MID.n_items and summary["unmapped_items"] == unmapped
    listened = set(flat(root, MID, "listens").item_id)
    assert listened & set(np.setdiff1d(items, per_item.index))  # unmapped tracks are actually heard

    embed = np.stack(emb["embed"].to_numpy(zero_copy_only=False))
    normed = np.stack(emb["normalized_embed"].to_numpy(zero_copy_only=False))
    assert embed.shape == (MID.n_items, MID.embed_dim)
    assert np.allclose(np.linalg.norm(normed, axis=1), 1, atol=1e-5)
    assert np.allclose(normed, embed / np.linalg.norm(embed, axis=1, keepdims=True), atol=1e-6)
    # tracks of the same (main) artist are closer than random pairs
    main = artists.groupby("item_id").artist_id.min()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, MID.n_items, (2, 20_000))
    same = main.reindex(a).to_numpy() == main.reindex(b).to_numpy()
    cos = (normed[a] * normed[b]).sum(axis=1)
    assert cos[same].mean() > cos[~same].mean() + 0.3


def test_no_listen_before_release(mid):
    root, _ = mid
    release = by_item_id(MID, "release")
    listens = flat(root, MID, "listens")
    assert (listens.timestamp.to_numpy() >= release[listens.item_id]).all()
    # new releases exist late in the period and are heard
    late = release[listens.item_id] > 0.7 * MID.days * 86_400
    assert late.sum() > 100


# ----------------------------------------------------------------------------- statistics


def test_familiar_share_and_summary_agree(mid):
    root, summary = mid
    listens = flat(root, MID, "listens")
    familiar = 1 - first_listen(listens).mean()
    assert 0.60 <= familiar <= 0.70
    assert summary["familiar_share"] == pytest.approx(familiar)


def test_played_ratio_is_bimodal_with_skips(mid):
    root, summary = mid
    ratio = flat(root, MID, "listens").played_ratio_pct.to_numpy(dtype=float)
    known = ratio[~np.isnan(ratio)]
    skip = (known < 20).mean()
    assert 0.15 <= skip <= 0.45 and summary["skip_share"] == pytest.approx(skip)
    full = ((known >= 95) & (known <= 100)).mean()
    middle = ((known >= 30) & (known < 90)).mean()
    assert full > 0.4 and middle < 0.15 and 0 < (known > 100).mean() < 0.05


def test_history_lengths_are_heavy_tailed(mid):
    root, summary = mid
    lengths = flat(root, MID, "listens").groupby("uid").size().to_numpy()
    median = np.median(lengths)
    assert np.quantile(lengths, 0.9) / median > 2 and lengths.max() / median > 5
    assert summary["history_length"]["median"] == median and summary["history_length"]["max"] == lengths.max()


def test_popularity_is_zipf_like(mid):
    root, summary = mid
    counts = np.sort(flat(root, MID, "listens").item_id.value_counts().to_numpy())[::-1]
    top10 = counts[: MID.n_items // 10].sum() / counts.sum()
    assert top10 > 0.4 and summary["popularity"]["top10pct_share"] == pytest.approx(top10)
    assert 0.3 < summary["popularity"]["zipf_exponent"] < 2


def test_order_carries_signal(mid):
    """Predicting the next track by the most frequent successor (learnt on other users) works on the
    real order and collapses once each user's history is shuffled."""
    root, _ = mid
    listens = flat(root, MID, "listens")
    rng = np.random.default_rng(7)
    shuffled = listens.assign(r=rng.random(len(listens))).sort_values(["uid", "r"], kind="stable")

    def successor_accuracy(df: pd.DataFrame) -> float:
        uid, item = df.uid.to_numpy(), df.item_id.to_numpy()
        same = uid[1:] == uid[:-1]
        prev, nxt, who = item[:-1][same], item[1:][same], uid[:-1][same]
        train = who % 5 != 0
        pairs = pd.DataFrame({"p": prev[train], "n": nxt[train]}).value_counts().reset_index()
        best = pairs.sort_values(["p", "count", "n"], ascending=[True, False, True]).drop_duplicates("p")
        guess = pd.Series(prev[~train]).map(best.set_index("p").n).to_numpy()
        return float((guess == nxt[~train]).mean())

    real, control = successor_accuracy(listens), successor_accuracy(shuffled)
    assert real > 0.05 and real > 4 * control


def _session_artist_overlap(root: Path, params: GeneratorParams) -> tuple[float, float]:
    """Share of a user's sessions whose discoveries share an artist with the discoveries of the
    session before, and with those of the session ten before."""
    listens = flat(root, params, "listens")
    artists = pq.read_table(root / "artist_item_mapping.parquet").to_pandas().drop_duplicates("item_id")
    ts, uid = listens.timestamp.to_numpy().astype(np.int64), listens.uid.to_numpy()
    listens["session"] = np.cumsum(np.r_[True, (uid[1:] != uid[:-1]) | (np.diff(ts) > 1_800)])
    found = listens[first_listen(listens)].merge(artists, on="item_id")
    sessions = found.groupby(["uid", "session"]).artist_id.agg(set).reset_index()
    who, sets = sessions.uid.to_numpy(), sessions.artist_id.to_numpy()

    def overlap(lag: int) -> float:
        pairs = [bool(sets[i] & sets[i - lag]) for i in range(lag, len(sets)) if who[i] == who[i - lag]]
        return float(np.mean(pairs))

    return overlap(1), overlap(10)


def test_discoveries_come_in_phases(mid, tmp_path):
    """A user explores one genre over several sessions: discoveries of consecutive sessions share
    artists well beyond the level of sessions far apart, and beyond what walks alone give."""
    root, _ = mid
    near, far = _session_artist_overlap(root, MID)
    without = replace(MID, focus_share=0.0)
    generate(without, tmp_path, progress=False)
    near_without, far_without = _session_artist_overlap(tmp_path, without)
    assert near - far > 0.05 and near - far > 2 * (near_without - far_without)


def _fresh_discovery_share(root: Path, params: GeneratorParams) -> float:
    """Among discoveries of tracks released during the period, the share made within
    ``fresh_days`` of the release."""
    release = by_item_id(params, "release")
    listens = flat(root, params, "listens")
    found = listens[first_listen(listens)]
    released = release[found.item_id.to_numpy()]
    age = found.timestamp.to_numpy().astype(np.int64) - released
    return float((age[released > 0] < params.fresh_days * 86_400).mean())


def test_new_releases_are_discovered_soon_after_release(mid, tmp_path):
    """Listeners go to what just came out: a new release's discoveries bunch in its first
    ``fresh_days`` days, far beyond what its popularity alone gives."""
    root, _ = mid
    fresh = _fresh_discovery_share(root, MID)
    without = replace(MID, fresh_share=0.0)
    generate(without, tmp_path, progress=False)
    assert fresh > _fresh_discovery_share(tmp_path, without) + 0.15


def test_discoveries_follow_the_drifting_taste(mid):
    """A user's first discoveries match the taste they start with, their last ones the taste they
    drift to (total-variation distance between a quarter's genre shares and a taste)."""
    root, _ = mid
    genre, users = by_item_id(MID, "genre"), gen._build_users(MID)
    listens = flat(root, MID, "listens")
    found = listens[first_listen(listens)]
    distances = []
    for uid, user in found.groupby("uid"):
        g, q = genre[user.item_id.to_numpy()], len(user) // 4
        if q < 10:
            continue
        early, late = (np.bincount(part, minlength=MID.n_genres) / q for part in (g[:q], g[-q:]))
        distances.append([0.5 * np.abs(share - taste).sum()
                          for share in (early, late) for taste in (users.taste[uid], users.taste_end[uid])])
    early_start, early_end, late_start, late_end = np.mean(distances, axis=0)
    assert len(distances) > 100
    assert early_start < early_end - 0.05 and late_end < late_start - 0.025


def test_skips_and_recommendations_lean_to_discoveries(mid):
    root, summary = mid
    listens = flat(root, MID, "listens")
    new = first_listen(listens)
    ratio = listens.played_ratio_pct.to_numpy(dtype=float)
    assert new[ratio < 20].mean() > new[ratio >= 80].mean() + 0.1
    assert summary["discovery_share_skipped"] == pytest.approx(new[ratio < 20].mean())
    assert summary["discovery_share_full_plays"] == pytest.approx(new[ratio >= 80].mean())
    organic = listens.is_organic.to_numpy()
    assert new[organic == 0].mean() > new[organic == 1].mean() + 0.1
    assert 0.35 <= organic.mean() <= 0.65
    assert summary["discovery_share_recommended"] == pytest.approx(new[organic == 0].mean())


def test_likes_follow_full_plays_and_dislikes_follow_skips(mid):
    root, _ = mid
    listens = flat(root, MID, "listens")
    ratio = listens.groupby(["uid", "item_id"]).played_ratio_pct
    best, worst = ratio.max(), ratio.min()
    likes, dislikes = flat(root, MID, "likes"), flat(root, MID, "dislikes")
    liked = pd.MultiIndex.from_frame(likes[["uid", "item_id"]])
    disliked = pd.MultiIndex.from_frame(dislikes[["uid", "item_id"]])
    assert np.nanmin(best.reindex(liked).to_numpy()) >= 80 and 0.005 < len(likes) / len(listens) < 0.05
    assert np.nanmax(worst.reindex(disliked).to_numpy()) < 20 and 0 < len(dislikes) < len(likes)
    unlikes = flat(root, MID, "unlikes")
    assert 0 < len(unlikes) < 0.2 * len(likes)
    merged = unlikes.merge(likes, on=["uid", "item_id"], suffixes=("", "_like"))
    assert len(merged) == len(unlikes) and (merged.timestamp > merged.timestamp_like).all()


def test_sessions_exist(mid):
    root, summary = mid
    listens = flat(root, MID, "listens")
    ts, uid = listens.timestamp.to_numpy().astype(np.int64), listens.uid.to_numpy()
    start = np.r_[True, (uid[1:] != uid[:-1]) | (np.diff(ts) > 1_800)]
    lengths = np.diff(np.r_[np.flatnonzero(start), len(ts)])
    assert 3 <= np.median(lengths) <= 30 and lengths.max() > 50
    assert summary["session_length"]["median"] == np.median(lengths)


def test_summary_file_records_parameters(mid):
    root, summary = mid
    on_disk = json.loads((root / "generator_summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["params"] == asdict(MID) and on_disk["size"] == "mid"


def test_presets_have_their_documented_scale():
    expected = {"small": 1e6, "medium": 1e7, "yambda-50m": 4.7e7}
    for name, listens in expected.items():
        planned = gen._build_users(preset(name)).n_events.sum()
        assert 0.9 * listens <= planned <= 1.1 * listens, name
    assert preset("yambda-50m").n_users == 10_000


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_users", -5),
        ("n_users", 0),
        ("n_items", "100"),
        ("median_history", 0),
        ("familiar_target", 1.5),
        ("focus_share", 1.2),
        ("history_sigma", -0.1),
        ("write_sequential", 1),
        ("seed", -1),
        ("days", 1),
        ("name", "a/b"),
    ],
)
def test_bad_parameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        replace(MID, **{field: value})


def test_cross_field_validation():
    with pytest.raises(ValueError, match="median_history"):
        replace(MID, min_history=50, median_history=10)
    with pytest.raises(ValueError, match="album_continue"):
        replace(MID, album_continue=0.8, artist_continue=0.5)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError) as err:
        preset("huge")
    assert all(name in str(err.value) for name in ("tiny", "small", "medium", "yambda-50m"))
    with pytest.raises(ValueError, match="bogus"):
        preset("tiny", bogus=1)
    assert preset("small", seed=3).seed == 3 and preset("small").seed == 0


def test_bench_generate_reports_throughput(tmp_path):
    result = bench_generate("tiny", tmp_path)
    summary = json.loads((tmp_path / "generator_summary.json").read_text())
    assert result["events"] == summary["counts"]["multi_event"] > 0
    assert result["seconds"] > 0 and result["events_per_s"] == pytest.approx(
        result["events"] / result["seconds"]
    )
    assert result["peak_rss_mb"] > 10
