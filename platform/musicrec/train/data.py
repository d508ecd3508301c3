"""The training sequences a model learns from, read from the lake at a pinned table version."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicrec.arrays import Ragged
from musicrec.lake.delta import read_arrow, table_exists, table_version
from musicrec.lake.tables import table_path


@dataclass(frozen=True)
class TrainingSequences:
    """One row per training user (ascending uid), raw item ids, timestamps aligned with the items."""

    uids: np.ndarray
    items: Ragged
    timestamps: Ragged
    version: int


def sequences_version(lake_root: str, dataset: str) -> int:
    path = table_path(lake_root, dataset, "sequences")
    if not table_exists(path):
        raise FileNotFoundError(f"no sequences table at {path}: run `musicrec preprocess` first")
    return table_version(path)


def read_training_sequences(
    lake_root: str,
    dataset: str,
    protocol: str = "holdout",
    name: str = "lh_track",
    k: int = 1,
    version: int | None = None,
) -> TrainingSequences:
    """The ``split = train`` rows of (protocol, name, k): the holdout's train users, or every GTS user."""
    version = sequences_version(lake_root, dataset) if version is None else version
    table = read_arrow(
        table_path(lake_root, dataset, "sequences"),
        version=version,
        columns=["uid", "items", "timestamps"],
        filters=[("protocol", "=", protocol), ("name", "=", name), ("k", "=", k), ("split", "=", "train")],
    ).sort_by("uid")
    items = Ragged.from_arrow(table["items"])
    timestamps = Ragged.from_arrow(table["timestamps"])
    if not np.array_equal(items.offsets, timestamps.offsets):
        raise ValueError(f"sequences ({protocol}, {name}, k={k}): items and timestamps differ in length")
    return TrainingSequences(table["uid"].to_numpy().astype(np.int64), items, timestamps, version)
