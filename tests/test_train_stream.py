"""The pieces of the training stream that need no Ray: user shards, shard collection, the partition check."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from musicrec.errors import InputError
from musicrec.train.stream import collect_rows, sequences_version, shard_of
from train_lake import write_lake


def test_shards_partition_users_deterministically_and_evenly():
    uids = np.arange(1, 20_001, dtype=np.int64) * 3
    shards = shard_of(uids, 4)
    assert set(shards.tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(shards, shard_of(uids[::-1], 4)[::-1])  # a function of the uid alone
    assert np.bincount(shards).min() > 0.23 * len(uids)
    assert np.all(shard_of(uids, 1) == 0)


def test_collect_rows_sorts_users_whatever_the_block_order():
    rows = {9: [5, 6], 2: [7], 4: [], 7: [1, 1, 3]}
    table = pa.table({"uid": list(rows), "items": pa.array(list(rows.values()), pa.list_(pa.int64()))})
    for blocks in ([table], [table.slice(2), table.slice(0, 2)], [table.slice(1, 2), table.slice(3), table.slice(0, 1)]):
        uid, items = collect_rows(blocks)
        assert uid.tolist() == [2, 4, 7, 9]
        assert [r.tolist() for r in items.to_lists()] == [rows[u] for u in (2, 4, 7, 9)]
    uid, items = collect_rows([table.slice(0, 0)])
    assert len(uid) == 0 and len(items) == 0


def test_partition_checked_from_the_delta_log(tmp_path):
    write_lake(tmp_path / "lake")
    assert sequences_version(str(tmp_path / "lake"), "walks", "holdout", "lh_track", 1) == 0
    with pytest.raises(InputError, match="no disc_track sequences with k=1"):
        sequences_version(str(tmp_path / "lake"), "walks", "holdout", "disc_track", 1)
    with pytest.raises(InputError, match="is at version 0"):
        sequences_version(str(tmp_path / "lake"), "walks", "holdout", "lh_track", 1, pinned=3)
    with pytest.raises(InputError, match="run `musicrec preprocess` first"):
        sequences_version(str(tmp_path / "lake"), "absent", "holdout", "lh_track", 1)
