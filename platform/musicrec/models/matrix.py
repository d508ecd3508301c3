"""The user × item matrix that the collaborative families (ItemKNN, ALS, BPR, EASE) learn from."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import scipy.sparse as sp

from musicrec.arrays import Ragged

# A bitmap of one byte per (row, item) cell is used while it is at most this many bytes per
# event: no more than the event arrays themselves take (raw and dense ids, 8 bytes each).
BITMAP_BYTES_PER_EVENT = 16


def user_item_matrix(
    rows: Ragged, n_items: int, values: Literal["binary", "counts"] = "binary", threads: int = 1
) -> sp.csr_matrix:
    """One row per sequence (training user or input history), float32: 1 where the item occurs
    (``binary``) or its number of occurrences (``counts``); sorted indices, no explicit zeros.
    With ``threads`` > 1, blocks of rows with equal shares of the events are built on that many
    threads (numpy and scipy release the GIL) and stacked."""
    if threads > 1 and len(rows) > threads:
        bounds = np.searchsorted(rows.offsets, np.linspace(0, rows.offsets[-1], threads + 1)[1:-1])
        cuts = sorted({0, *bounds.tolist(), len(rows)})
        with ThreadPoolExecutor(threads) as pool:
            blocks = pool.map(lambda a, b: _matrix(rows.rows(a, b), n_items, values), cuts[:-1], cuts[1:])
            return sp.vstack(list(blocks), format="csr")
    return _matrix(rows, n_items, values)


def _matrix(rows: Ragged, n_items: int, values: Literal["binary", "counts"]) -> sp.csr_matrix:
    index_dtype = np.int32 if max(n_items, len(rows.values)) < 2**31 else np.int64
    shape = (len(rows), n_items)
    if values == "binary" and len(rows) * n_items <= BITMAP_BYTES_PER_EVENT * len(rows.values):
        # Mark the cells and read them back in order: distinct and sorted in O(events + cells),
        # where sorting each row's items costs O(events log row length).
        cells = np.zeros(len(rows) * n_items, dtype=bool)
        cells[rows.row_ids() * n_items + rows.values] = True
        keys = np.flatnonzero(cells)
        indptr = np.zeros(len(rows) + 1, dtype=index_dtype)
        np.cumsum(np.bincount(keys // n_items, minlength=len(rows)), out=indptr[1:])
        return sp.csr_matrix((np.ones(len(keys), np.float32), (keys % n_items).astype(index_dtype), indptr), shape=shape)
    # Straight to CSR (each sequence is already one row): sum_duplicates sorts each row's
    # indices in place and adds up repeated items, the counts; astype's copy keeps the
    # caller's array as it was.
    matrix = sp.csr_matrix(
        (np.ones(len(rows.values), dtype=np.float32), rows.values.astype(index_dtype), rows.offsets.astype(index_dtype)),
        shape=shape,
    )
    matrix.sum_duplicates()
    if values == "binary":
        matrix.data[:] = 1.0
    return matrix
