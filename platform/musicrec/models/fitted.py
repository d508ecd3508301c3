"""A fitted model with what it needs to be used and reloaded: its item mapping, the training
sequence it learnt from (name and k, which decide how an input history is derived), and the
tasks it serves. Saved as a folder: ``model.json`` (family, config, sequence, k, tasks),
``item_ids.npy`` and ``state.npz`` (the family's arrays; no pickles)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicrec import contract
from musicrec.arrays import Ragged, as_ragged
from musicrec.models.base import Model, TrainingData
from musicrec.models.items import ItemIndex

FORMAT_VERSION = 1


@dataclass
class FittedModel:
    name: str
    model: Model
    items: ItemIndex
    sequence: str = "lh_track"
    k: int = 1
    # None: every task of the sequence's domain (T1/T2/next_track for tracks, ...).
    tasks: tuple[str, ...] | None = None

    def runs_on(self, task: str) -> bool:
        if self.tasks is not None:
            return task in self.tasks
        return contract.task(task).domain == contract.parse_name(self.sequence)[1]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "family": self.model.family,
            "config": self.model.config_dict(),
            "seed": self.model.seed,
            "sequence": self.sequence,
            "k": self.k,
            "tasks": list(self.tasks) if self.tasks is not None else None,
            "n_items": len(self.items),
        }
        np.save(path / "item_ids.npy", self.items.ids)
        np.savez(path / "state.npz", **self.model.state())
        (path / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return path


def load_model(path: str | Path) -> FittedModel:
    """A model saved by :meth:`FittedModel.save`."""
    from musicrec.models import family_class

    path = Path(path)
    if not (path / "model.json").is_file():
        raise FileNotFoundError(f"no saved model at {path} (model.json not found)")
    meta = json.loads((path / "model.json").read_text())
    cls = family_class(meta["family"])
    config = cls.Config.model_validate(meta["config"]) if cls.Config is not None else None
    model = cls(config, seed=meta["seed"])
    with np.load(path / "state.npz", allow_pickle=False) as state:
        model.load_state({key: state[key] for key in state.files})
    items = ItemIndex(np.load(path / "item_ids.npy", allow_pickle=False))
    tasks = tuple(meta["tasks"]) if meta["tasks"] is not None else None
    return FittedModel(meta["name"], model, items, meta["sequence"], meta["k"], tasks)


def fit_model(
    name: str,
    model: Model,
    train_sequences: Ragged | Sequence[np.ndarray],
    sequence: str = "lh_track",
    k: int = 1,
    tasks: tuple[str, ...] | None = None,
    timestamps: Ragged | Sequence[np.ndarray] | None = None,
) -> FittedModel:
    """Index the raw item ids of ``train_sequences`` and fit ``model`` on them."""
    contract.parse_name(sequence)
    raw = as_ragged(train_sequences)
    items, dense_values = ItemIndex.indexing(raw.values)
    dense = Ragged(dense_values, raw.offsets)
    stamps = None if timestamps is None else as_ragged(timestamps)
    model.fit(TrainingData(dense, len(items), stamps))
    return FittedModel(name, model, items, sequence, k, tasks)
