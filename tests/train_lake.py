"""A tiny lake whose sequences a sequential model can learn in a few epochs, written with delta-rs.

Each user walks the catalogue in steps of one item from a random start (wrapping round), so the
next item is the last item plus one: order is everything, popularity is flat. Holdout users'
ground truth is the next ``GT`` items of their walk, all new to them (a T1 discovery target).
Only the tables training reads are written: `sequences` (holdout, lh_track, k=1) and
`holdout_examples` (T1, val and test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

N_ITEMS = 60
GT = 3
# A gSASRec small enough to train on these walks in seconds per epoch.
TINY_GSASREC = (
    "model.family=gsasrec",
    "model.embedding_dim=16",
    "model.ffn_dim=16",
    "model.num_blocks=1",
    "model.max_len=12",
    "model.batch_size=32",
    "model.negatives=8",
    "model.gbce_alpha=null",
    "model.weight_decay=0.0",
)


def walks(n_users: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N_ITEMS, n_users)
    lengths = rng.integers(8, 30, n_users)
    seqs = [(s + np.arange(n + GT)) % N_ITEMS for s, n in zip(starts, lengths, strict=True)]
    split = np.array(["train", "val", "test"])[rng.choice(3, n_users, p=[0.7, 0.15, 0.15])]
    return np.arange(1, n_users + 1, dtype=np.int64) * 7, seqs, split


def write_lake(root: Path, dataset: str = "walks", n_users: int = 240, seed: int = 0) -> Path:
    uids, seqs, split = walks(n_users, seed)
    # Raw ids are offset so that dense indices differ from raw ids (a mapping bug would show).
    raw = [s.astype(np.int64) + 1000 for s in seqs]
    items = [r if sp == "train" else r[:-GT] for r, sp in zip(raw, split, strict=True)]
    lake = root / dataset
    sequences = pa.table(
        {
            "protocol": ["holdout"] * n_users,
            "uid": uids,
            "name": ["lh_track"] * n_users,
            "k": pa.array([1] * n_users, pa.int32()),
            "split": split,
            "items": pa.array(items, pa.list_(pa.int64())),
        }
    )
    write_deltalake(lake / "sequences", sequences, partition_by=["protocol", "name", "k"])
    held = split != "train"
    examples = pa.table(
        {
            "uid": uids[held],
            "task": ["T1"] * int(held.sum()),
            "split": split[held],
            "history_items": pa.array([r[:-GT] for r, h in zip(raw, held, strict=True) if h], pa.list_(pa.int64())),
            "targets": pa.array([r[-GT:] for r, h in zip(raw, held, strict=True) if h], pa.list_(pa.int64())),
        }
    )
    write_deltalake(lake / "holdout_examples", examples, partition_by=["task"])
    return root
