"""Training sequences for Ray Train: a Ray Data stream over one pinned version of `sequences`.

The driver builds a lazy dataset (:func:`musicrec.lake.readers.sequences_dataset`:
``ray.data.read_delta`` at the pinned version, filtered to one protocol/name/k and
split=train) and never collects it, nor anything derived from it (it reads only the Delta
log). Each worker receives its own dataset, already narrowed in Ray Data to its shard of
users, and materialises that shard for the sampler; the ranks agree on the item vocabulary by
exchanging their shards' distinct items.

Sharding is deterministic: a user belongs to shard ``splitmix64(uid ^ salt) mod workers``
(the user split's hash, salted so shards are independent of the split), and a shard is sorted
by uid, so block order and read parallelism never change what a worker holds.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from musicrec.arrays import Ragged
from musicrec.errors import InputError
from musicrec.hashing import splitmix64
from musicrec.lake.readers import sequences_dataset, table_exists, table_version
from musicrec.lake.tables import table_path

# Keeps the shard hash independent of the holdout split's hash of (seed << 32) + uid.
_SHARD_SALT = np.uint64(0x5EED5A4D)
COLUMNS = ("uid", "items")


def sequences_version(
    lake_root: str, dataset: str, protocol: str, name: str, k: int, pinned: int | None = None
) -> int:
    """The version of the dataset's `sequences` to read (``pinned`` or the latest), checked from
    the Delta log alone to hold rows of (protocol, name, k)."""
    path = table_path(lake_root, dataset, "sequences")
    if not table_exists(path):
        raise InputError(f"no sequences table at {path}: run `musicrec preprocess` first")
    latest = table_version(path)
    if pinned is not None and pinned > latest:
        raise InputError(f"train.sequences_version={pinned} but {path} is at version {latest}")
    version = latest if pinned is None else pinned
    files = pa.table(DeltaTable(path, version=version).get_add_actions(flatten=True))
    mine = pc.and_(
        pc.and_(pc.equal(files["partition.protocol"], protocol), pc.equal(files["partition.name"], name)),
        pc.equal(files["partition.k"], k),
    )
    if not pc.any(mine).as_py():
        raise InputError(f"{path} (version {version}) has no {name} sequences with k={k} under protocol {protocol}")
    return version


def training_dataset(lake_root: str, dataset: str, protocol: str, name: str, k: int, version: int):
    """A lazy Ray Dataset of (uid, items) rows: the train users of one training sequence."""
    return sequences_dataset(lake_root, dataset, protocol, name, k, "train", COLUMNS, version)


def shard_of(uid: np.ndarray, workers: int) -> np.ndarray:
    return (splitmix64(np.asarray(uid, dtype=np.int64).astype(np.uint64) ^ _SHARD_SALT) % np.uint64(workers)).astype(
        np.int64
    )


def _keep_shard(batch: pa.Table, rank: int, workers: int) -> pa.Table:
    return batch.filter(pa.array(shard_of(batch["uid"].to_numpy(), workers) == rank))


def worker_datasets(ds, workers: int, sharding: str) -> dict:
    """One dataset per worker rank (``rank0``...): its users' shard, or every user when replicated."""
    if sharding == "replicated" or workers == 1:
        return {f"rank{r}": ds for r in range(workers)}
    return {
        f"rank{r}": ds.map_batches(_keep_shard, batch_format="pyarrow", fn_kwargs={"rank": r, "workers": workers})
        for r in range(workers)
    }


def collect_rows(batches: Iterable[pa.Table]) -> tuple[np.ndarray, Ragged]:
    """A worker's streamed (uid, items) rows, sorted by uid, items still raw ids."""
    uids, rows = [], []
    for batch in batches:
        if batch.num_rows:
            uids.append(batch["uid"].to_numpy().astype(np.int64))
            rows.append(Ragged.from_arrow(batch["items"]))
    if not uids:
        return np.zeros(0, dtype=np.int64), Ragged.from_lists([])
    uid = np.concatenate(uids)
    lengths = np.concatenate([r.lengths for r in rows])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    order = np.argsort(uid, kind="stable")
    return uid[order], Ragged(np.concatenate([r.values for r in rows]), offsets).take(order)
