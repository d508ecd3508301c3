"""The user × item matrix that the collaborative families (ItemKNN, ALS, BPR, EASE) learn from."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from musicrec.arrays import Ragged


def user_item_matrix(rows: Ragged, n_items: int, values: Literal["binary", "counts"] = "binary") -> sp.csr_matrix:
    """One row per sequence (training user or input history), float32: 1 where the item occurs
    (``binary``) or its number of occurrences (``counts``); sorted indices, no explicit zeros."""
    # Straight to CSR (each sequence is already one row): sum_duplicates sorts each row's
    # indices and adds up repeated items, the counts. int32 indices copy the caller's array,
    # which sorting in place would otherwise reorder.
    index_dtype = np.int32 if max(n_items, len(rows.values)) < 2**31 else np.int64
    matrix = sp.csr_matrix(
        (np.ones(len(rows.values), dtype=np.float32), rows.values.astype(index_dtype), rows.offsets.astype(index_dtype)),
        shape=(len(rows), n_items),
    )
    matrix.sum_duplicates()
    if values == "binary":
        matrix.data[:] = 1.0
    return matrix
