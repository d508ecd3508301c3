"""A toy lake for model tests: `sequences` (every name, holdout protocol) and `holdout_examples`
(T1–T4, val and test) written with delta-rs, with the shapes preprocessing writes.

Users listen in sessions drawn from a few taste groups, so collaborative models have something to
learn; the sequence names are derived by the project's own function (``sequence_mask``), the holdout targets are each
user's last events split by discovery / familiar exactly as tasks-and-splits.md defines them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from musicrec.contract import SEQUENCE_NAMES, parse_name
from musicrec.prep.sequences import sequence_mask

N_USERS = 90
N_TRACKS = 48
GT = 6
ARTIST_OF = np.arange(N_TRACKS) // 4  # 12 artists of 4 tracks

SEQ_SCHEMA = pa.schema(
    [
        ("protocol", pa.string()),
        ("uid", pa.int64()),
        ("name", pa.string()),
        ("k", pa.int32()),
        ("split", pa.string()),
        ("items", pa.list_(pa.int32())),
        ("timestamps", pa.list_(pa.int64())),
        ("positions", pa.list_(pa.int32())),
    ]
)
HOLDOUT_SCHEMA = pa.schema(
    [
        ("uid", pa.int64()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("history_items", pa.list_(pa.int32())),
        ("history_timestamps", pa.list_(pa.int64())),
        ("targets", pa.list_(pa.int32())),
    ]
)


def listening(rng: np.random.Generator, uid: int) -> tuple[np.ndarray, np.ndarray]:
    group = uid % 3
    pool = np.arange(group * 16, group * 16 + 16)
    n = int(rng.integers(25, 45))
    items = rng.choice(pool, size=n, p=np.linspace(2, 1, 16) / np.linspace(2, 1, 16).sum())
    # The last events drift half of the time to the next group's tracks: discoveries of tracks and artists.
    drift = rng.random(GT) < 0.5
    items[-GT:][drift] = rng.choice((pool + 16) % N_TRACKS, size=int(drift.sum()))
    stamps = np.cumsum(rng.integers(1, 5, size=n)) * 600 + uid
    return items.astype(np.int64), stamps.astype(np.int64)


def split_of(uid: int) -> str:
    return "val" if uid % 10 == 1 else "test" if uid % 10 == 2 else "train"


def write_toy_lake(root: str | Path, dataset: str = "toy", seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    seq_rows, holdout_rows = [], []
    for uid in range(N_USERS):
        items, stamps = listening(rng, uid)
        split = split_of(uid)
        for domain, values in (("track", items), ("artist", ARTIST_OF[items])):
            for name in (n for n in SEQUENCE_NAMES if n.endswith(domain)):
                mask = sequence_mask(np.zeros(len(values), dtype=np.int64), values, parse_name(name)[0], 1)
                seq_rows.append(
                    {
                        "protocol": "holdout",
                        "uid": uid,
                        "name": name,
                        "k": 1,
                        "split": split,
                        "items": values[mask].tolist(),
                        "timestamps": stamps[mask].tolist(),
                        "positions": np.flatnonzero(mask).tolist(),
                    }
                )
            if split != "train":
                history, future = values[:-GT], values[-GT:]
                seen = set(history.tolist())
                for task, familiar in ((("T1", False), ("T2", True)) if domain == "track" else (("T3", False), ("T4", True))):
                    targets = [int(i) for i in future if (int(i) in seen) == familiar]
                    holdout_rows.append(
                        {
                            "uid": uid,
                            "task": task,
                            "split": split,
                            "history_items": history.tolist(),
                            "history_timestamps": stamps[:-GT].tolist(),
                            "targets": targets,
                        }
                    )
    write_deltalake(
        f"{root}/{dataset}/sequences",
        pa.Table.from_pylist(seq_rows, SEQ_SCHEMA),
        partition_by=["protocol", "name", "k"],
    )
    write_deltalake(
        f"{root}/{dataset}/holdout_examples", pa.Table.from_pylist(holdout_rows, HOLDOUT_SCHEMA), partition_by=["task"]
    )
    return str(root)
