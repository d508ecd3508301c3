"""The user × item matrix that the collaborative families (ItemKNN, ALS, BPR, EASE) learn from."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from musicrec.arrays import Ragged


def user_item_matrix(rows: Ragged, n_items: int, values: Literal["binary", "counts"] = "binary") -> sp.csr_matrix:
    """One row per sequence (training user or input history), float32: 1 where the item occurs
    (``binary``) or its number of occurrences (``counts``); sorted indices, no explicit zeros."""
    ones = np.ones(len(rows.values), dtype=np.float32)
    # COO -> CSR sums duplicate (row, item) entries: the counts.
    matrix = sp.csr_matrix((ones, (rows.row_ids(), rows.values)), shape=(len(rows), n_items), dtype=np.float32)
    matrix.sum_duplicates()
    if values == "binary":
        matrix.data[:] = 1.0
    return matrix
