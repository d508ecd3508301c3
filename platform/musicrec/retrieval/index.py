"""A faiss index over a model's item embeddings (docs/models.md, "Retrieval").

Inner product, since a family's scores are ``query_embeddings @ item_embeddings.T``. Exact
(``IndexFlatIP``) below ``retrieval.approximate_from`` items; above it IVF or HNSW with the
configured parameters. The index is built once with the training run and logged as its ``index``
artifact (``items.faiss`` plus ``index.json``), so every batch job searches the same index; search
parameters (``nprobe``, ``ef_search``) are the current config's, applied when it is loaded.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from musicrec.config.schema import RetrievalConfig
from musicrec.models import FittedModel

log = logging.getLogger(__name__)

ARTIFACT = "index"  # the run's artifact folder
INDEX_FILE = "items.faiss"
META_FILE = "index.json"
Kind = Literal["exact", "ivf", "hnsw"]


def index_kind(n_items: int, settings: RetrievalConfig) -> Kind:
    return "exact" if n_items < settings.approximate_from else settings.kind


def nlist_for(n_items: int, settings: RetrievalConfig) -> int:
    # The usual 4 * sqrt(n) lists, never more than items (k-means needs a point per centroid).
    return min(settings.nlist or max(1, int(4 * math.sqrt(n_items))), n_items)


def build_index(embeddings: np.ndarray, settings: RetrievalConfig, seed: int = 0) -> faiss.Index:
    """An inner-product index over ``embeddings`` (n_items, d); ids are dense item indices."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = vectors.shape
    kind = index_kind(n, settings)
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = nlist_for(n, settings)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed  # k-means starts from seeded centroids: the same embeddings give the same index
        # k-means on a sample of 64 points per list: as good a partition, a quarter of faiss's default work.
        index.cp.max_points_per_centroid = 64
        index.train(vectors)
    else:
        index = faiss.IndexHNSWFlat(d, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
    index.add(vectors)
    configure_search(index, settings)
    return index


def configure_search(index: faiss.Index, settings: RetrievalConfig, fetch: int = 0) -> None:
    """Apply the search parameters; HNSW's candidate list is at least the ``fetch`` results asked for."""
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(settings.nprobe, index.nlist)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(settings.ef_search, fetch)


def is_exact(index: faiss.Index) -> bool:
    return isinstance(index, faiss.IndexFlat)


def describe(index: faiss.Index) -> dict[str, int | str]:
    """Kind and parameters, as logged and stored beside the index."""
    out: dict[str, int | str] = {"n_items": int(index.ntotal), "dim": int(index.d)}
    if isinstance(index, faiss.IndexIVF):
        return {**out, "kind": "ivf", "nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    if isinstance(index, faiss.IndexHNSW):
        hnsw = index.hnsw
        return {**out, "kind": "hnsw", "m": int(hnsw.nb_neighbors(1)), "ef_construction": int(hnsw.efConstruction),
                "ef_search": int(hnsw.efSearch)}
    return {**out, "kind": "exact"}


def save_index(index: faiss.Index, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / INDEX_FILE))
    (folder / META_FILE).write_text(json.dumps(describe(index), indent=2, sort_keys=True))
    return folder


def load_index(folder: Path, settings: RetrievalConfig) -> faiss.Index:
    index = faiss.read_index(str(folder / INDEX_FILE))
    configure_search(index, settings)
    return index


def log_index(fitted: FittedModel, settings: RetrievalConfig, seed: int = 0) -> dict[str, int | str] | None:
    """Build the index of ``fitted``'s item embeddings and log it as the active run's ``index``
    artifact; None (nothing logged) for a family without embeddings."""
    import mlflow

    embeddings = fitted.model.item_embeddings()
    if embeddings is None:
        return None
    index = build_index(embeddings, settings, seed)
    with tempfile.TemporaryDirectory(prefix="musicrec-index-") as tmp:
        mlflow.log_artifacts(str(save_index(index, Path(tmp))), ARTIFACT)
    info = describe(index)
    mlflow.log_params({f"index.{key}": value for key, value in info.items()})
    return info


def run_index(run_id: str | None, fitted: FittedModel, settings: RetrievalConfig, seed: int = 0) -> faiss.Index:
    """The index logged with training run ``run_id``; built here from the model's embeddings when the run
    has none (a model trained before retrieval existed, or a saved folder without a run)."""
    import mlflow

    if run_id is not None:
        with tempfile.TemporaryDirectory(prefix="musicrec-index-") as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp)
            except Exception:  # noqa: BLE001 - MLflow's error for a missing artifact varies by store
                local = None
            if local is not None and (Path(local) / INDEX_FILE).is_file():
                return load_index(Path(local), settings)
        log.warning("run %s has no %s artifact; building the index from the model's embeddings", run_id, ARTIFACT)
    embeddings = fitted.model.item_embeddings()
    if embeddings is None:
        raise ValueError(f"{fitted.name} has no item embeddings to index")
    return build_index(embeddings, settings, seed)
