"""The pure task-sequence derivation (docs/tasks.md §4) against hand-worked and brute-force answers."""

from __future__ import annotations

import numpy as np
import pytest

from musicrec.prep.sequences import (
    canonical_order,
    derive,
    derive_items,
    pair_stats,
    sequence_mask,
    stats_mask,
)


def brute(items: list[int], kind: str, k: int) -> list[int]:
    """Positions of the kind sequence, written straight from the definitions."""
    valid = [x for x in items if x >= 0]
    out = []
    for i, x in enumerate(items):
        if x < 0:
            continue
        seen_before = x in items[:i]
        if (kind == "disc" and seen_before) or (kind == "fam" and not seen_before):
            continue
        if valid.count(x) >= k:
            out.append(i)
    return out


def test_hand_worked_history():
    #            0  1  2  3  4  5  6  7
    history = [5, 3, 5, 9, 3, 5, 7, 9]
    assert derive(history, "lh").tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert derive(history, "disc").tolist() == [0, 1, 3, 6]  # first listens of 5, 3, 9, 7
    assert derive(history, "fam").tolist() == [2, 4, 5, 7]  # repeats
    # k = 3: only item 5 occurs three times.
    assert derive(history, "lh", 3).tolist() == [0, 2, 5]
    assert derive(history, "disc", 3).tolist() == [0]
    assert derive(history, "fam", 3).tolist() == [2, 5]
    # k = 2: items 5, 3, 9.
    assert derive_items(history, "disc_track", 2).tolist() == [5, 3, 9]


def test_unmapped_artists_are_in_no_sequence_and_do_not_count():
    artists = [1, -1, 1, 2, -1, 2]
    assert derive(artists, "lh").tolist() == [0, 2, 3, 5]
    assert derive(artists, "disc").tolist() == [0, 3]
    assert derive(artists, "fam").tolist() == [2, 5]
    assert derive(artists, "lh", 3).tolist() == []


@pytest.mark.parametrize("kind", ["lh", "disc", "fam"])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_batched_equals_brute_force_per_user(kind, k):
    rng = np.random.default_rng(k * 7 + len(kind))
    lengths = rng.integers(0, 40, size=60)
    group = np.repeat(np.arange(len(lengths)), lengths)
    items = rng.integers(-1, 12, size=len(group))  # small alphabet: many repeats, some unmapped
    mask = sequence_mask(group, items, kind, k)
    start = 0
    for n in lengths:
        user_items = items[start : start + n].tolist()
        got = (np.flatnonzero(mask[start : start + n])).tolist()
        assert got == brute(user_items, kind, k)
        start += n


def test_one_pair_stats_gives_every_kind_and_k_as_brute_force():
    # Preprocessing derives all sequences of a chunk from one pair_stats (one sort), in any order of k.
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 50, size=40)
    group = np.repeat(np.arange(len(lengths)), lengths)
    items = rng.integers(-1, 15, size=len(group))
    stats = pair_stats(group, items)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for k in (5, 1, 3, 2):
        for kind in ("fam", "lh", "disc"):
            mask = stats_mask(stats, kind, k)
            for user, n in enumerate(lengths):
                got = np.flatnonzero(mask[starts[user] : starts[user] + n]).tolist()
                assert got == brute(items[starts[user] : starts[user] + n].tolist(), kind, k), (kind, k, user)


def test_same_item_in_two_users_is_a_discovery_for_each():
    group = np.array([0, 0, 1, 1])
    items = np.array([4, 4, 4, 4])
    assert sequence_mask(group, items, "disc").tolist() == [True, False, True, False]


def test_canonical_order_sorts_by_uid_time_then_item_and_keeps_duplicates():
    uid = np.array([2, 1, 1, 1, 1])
    ts = np.array([5, 10, 10, 5, 10])
    item = np.array([1, 9, 3, 7, 3])
    order = canonical_order(uid, ts, item)
    assert list(zip(uid[order], ts[order], item[order], strict=True)) == [
        (1, 5, 7), (1, 10, 3), (1, 10, 3), (1, 10, 9), (2, 5, 1)
    ]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown sequence kind"):
        derive([1], "new")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be >= 1"):
        derive([1], "lh", 0)
    with pytest.raises(ValueError, match="unknown sequence name"):
        derive_items([1], "disc_album")
    with pytest.raises(ValueError, match="item id 2147483648 does not fit"):
        derive([1, 2**31], "lh")
