"""A fitted model with its faiss index: user histories (raw ids) in, a task's top-K raw items out.

The model's input is derived from the history as for its training sequence and the filter uses the
whole history, exactly as the evaluator ranks (:func:`musicrec.evaluate.protocols.recommend`); only
the candidates come from the index. A family without item embeddings (popularity, ItemKNN, EASE)
has no index and is ranked by the evaluator's exact full-catalogue ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from musicrec.arrays import Ragged
from musicrec.config.schema import RetrievalConfig
from musicrec.evaluate.protocols import model_inputs, recommend
from musicrec.models import FittedModel, load_model
from musicrec.retrieval.filters import search
from musicrec.retrieval.index import ARTIFACT, load_index, save_index

MODEL = "model"  # the saved model's folder in a bundle; the index's is index.ARTIFACT


@dataclass
class Retriever:
    fitted: FittedModel
    index: faiss.Index | None
    settings: RetrievalConfig

    def __post_init__(self) -> None:
        embeddings = self.fitted.model.item_embeddings()
        self.item_emb = None if embeddings is None else np.ascontiguousarray(embeddings, dtype=np.float32)
        if self.index is not None and self.item_emb is None:
            raise ValueError(f"{self.fitted.name} has an index but no item embeddings")

    def top_k(self, history: Ragged, task: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw item ids (n, k; padded -1) and float32 scores (padded -inf) of users with these histories
        (raw ids in the task's domain, oldest first)."""
        if self.index is None:
            return recommend(self.fitted, history, task, k)
        queries = self.fitted.model.query_embeddings(model_inputs(self.fitted, history))
        known = self.fitted.items.map_rows(history)[0]
        dense, scores = search(
            self.index, self.item_emb, queries, known, task, k, self.settings.margin, self.settings
        )
        return self.fitted.items.to_raw(dense), scores

    def save(self, folder: Path) -> Path:
        """The model and its index in one folder (what batch workers load)."""
        self.fitted.save(folder / MODEL)
        if self.index is not None:
            save_index(self.index, folder / ARTIFACT)
        return folder

    @classmethod
    def load(cls, folder: Path, settings: RetrievalConfig) -> Retriever:
        index_dir = folder / ARTIFACT
        index = load_index(index_dir, settings) if index_dir.is_dir() else None
        return cls(load_model(folder / MODEL), index, settings)
