"""Exact full-catalogue top-K with the task candidate filters (docs/tasks.md §5).

Items are dense indices 0..n_items-1 in item-id order, so "ties broken by item id
ascending" (docs/metrics.md) is "ties broken by index ascending". ``torch.topk`` is not stable
on ties, so the boundary of the top-K is repaired explicitly; the filters are applied
inside the ranking (masking or scoring only the history), never by over-fetching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from musicrec import contract
from musicrec.arrays import Ragged, as_ragged

# Scores of the users [start, stop) of the call, shape (stop - start, n_items).
ScoreFn = Callable[[int, int], torch.Tensor]
Rows = Ragged | Iterable[Sequence[int] | np.ndarray]
# Keeps one batch of float32 scores near 256 MiB whatever the catalogue size.
SCORE_BUDGET_ELEMENTS = 2**26


def default_batch_size(n_items: int) -> int:
    """Users per batch so that one batch of full-catalogue scores stays within the budget."""
    return max(1, SCORE_BUDGET_ELEMENTS // max(n_items, 1))


def task_filter(task: str) -> contract.Filter | None:
    """The task's candidate filter: "exclude", "only" or None."""
    return contract.task(task).filter


def _exact_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns of each row by (-score, column), -inf meaning "not a candidate"."""
    if scores.shape[1] <= k:
        # A stable sort keeps tied columns in ascending order, which is the tie rule.
        vals, cols = torch.sort(scores, dim=1, descending=True, stable=True)
        _check_nan(vals)
    else:
        # One value past the k-th exposes a tie across the boundary, where topk may have
        # picked the wrong tied columns; inside the top-k it orders ties arbitrarily.
        # Only rows with a tie need repair: rare for learnt embeddings, so the common path
        # costs two small ops on the (B, k+1) result (each a parallel region on CPU).
        vals, cols = torch.topk(scores, k + 1, dim=1)
        _check_nan(vals)
        tie = vals[:, 1:] == vals[:, :-1]
        vals, cols = vals[:, :k], cols[:, :k]
        # One global test first: the common answer "no tie" then costs no more ops.
        if tie.any():
            rows = torch.nonzero(tie.any(dim=1)).flatten()
            vals[rows], cols[rows] = _repair_ties(scores[rows], vals[rows, k - 1 :], k)
    return vals, cols


def _check_nan(ordered: torch.Tensor) -> None:
    # topk and descending sort place NaN first, so the first column tells whether a row has one.
    if torch.isnan(ordered[:, 0]).any():
        raise ValueError("scores contain NaN")


def _repair_ties(scores: torch.Tensor, kth: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of rows whose k-th value is ``kth`` (r, 1): every column above it plus
    the lowest tied columns, ordered by (-score, column)."""
    greater = scores > kth
    tied = scores == kth
    need = k - greater.sum(dim=1, keepdim=True)
    keep = greater | (tied & (torch.cumsum(tied, dim=1) <= need))
    # Row-major nonzero lists each row's k kept columns contiguously, ascending.
    cols = torch.nonzero(keep)[:, 1].view(len(scores), k)
    vals, perm = torch.sort(scores.gather(1, cols), dim=1, descending=True, stable=True)
    return vals, cols.gather(1, perm)


def _check_items(rows: Ragged, n_items: int) -> None:
    if len(rows.values) and (rows.values.min() < 0 or rows.values.max() >= n_items):
        raise ValueError(f"filter items must be dense indices in 0..{n_items - 1}")


def topk(
    scores: torch.Tensor,
    k: int,
    exclude: Rows | None = None,
    only: Rows | None = None,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of ``scores`` (B, n_items); ties by index ascending.

    ``exclude``: per-row items that may not be recommended (T1/T3). ``only``: per-row
    items that are the only candidates (T2/T4); a row with fewer than k distinct such
    items gets fewer than k. Returns (indices, values), both (B, k): indices padded with
    -1 and values with -inf where a row has fewer than k candidates. A score of -inf
    counts as "not a candidate". ``inplace`` lets ``exclude`` overwrite ``scores``.
    """
    if exclude is not None and only is not None:
        raise ValueError("give either exclude or only, not both")
    if scores.ndim != 2 or k < 1:
        raise ValueError(f"scores must be (B, n_items) and k >= 1, got {tuple(scores.shape)} and k={k}")
    n_rows, n_items = scores.shape
    device = scores.device
    cand = None
    if exclude is not None:
        ex = as_ragged(exclude)
        _check_items(ex, n_items)
        if len(ex) != n_rows:
            raise ValueError(f"{n_rows} score rows but {len(ex)} exclude rows")
        if not inplace:
            scores = scores.clone()
        rows = torch.from_numpy(ex.row_ids()).to(device)
        scores[rows, torch.from_numpy(ex.values).to(device)] = float("-inf")
    elif only is not None:
        on = as_ragged(only).distinct()
        _check_items(on, n_items)
        if len(on) != n_rows:
            raise ValueError(f"{n_rows} score rows but {len(on)} only rows")
        # Score just the history, columns ascending so column order is item order.
        width = max(int(on.lengths.max(initial=0)), 1)
        row_ids = on.row_ids()
        slot = np.arange(len(on.values)) - on.offsets[:-1][row_ids]
        cand_np = np.full((n_rows, width), -1, dtype=np.int64)
        cand_np[row_ids, slot] = on.values
        cand = torch.from_numpy(cand_np).to(device)
        scores = scores.gather(1, cand.clamp(min=0)).masked_fill(cand < 0, float("-inf"))
    vals, cols = _exact_topk(scores, k)
    items = cand.gather(1, cols) if cand is not None else cols
    # Values are sorted, so only rows whose last value is -inf hold non-candidates.
    if (vals[:, -1] == float("-inf")).any():
        items = items.masked_fill(vals == float("-inf"), -1)
    if items.shape[1] < k:
        pad = k - items.shape[1]
        items = torch.nn.functional.pad(items, (0, pad), value=-1)
        vals = torch.nn.functional.pad(vals, (0, pad), value=float("-inf"))
    return items, vals


def rank_users(
    model: ScoreFn | tuple[torch.Tensor, torch.Tensor],
    histories: Rows,
    task: str,
    k: int = 100,
    batch_size: int | None = None,
) -> np.ndarray:
    """Top-k dense item indices (n_users, k), padded with -1, under the task's filter
    (:func:`rank_users_scored` without the scores)."""
    return rank_users_scored(model, histories, task, k, batch_size)[0]


def rank_users_scored(
    model: ScoreFn | tuple[torch.Tensor, torch.Tensor],
    histories: Rows,
    task: str,
    k: int = 100,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k dense item indices (n_users, k), padded with -1, under the task's filter, and their
    float32 scores (padded with -inf).

    ``model`` is either ``score(start, stop)`` returning a fresh (stop - start, n_items)
    tensor of those users' scores (it is masked in place), or the pair
    ``(user_emb (n_users, d), item_emb (n_items, d))`` scored by inner product. ``histories`` (one row per user) are the candidate-filter histories
    in dense indices; for tasks without a filter only their count matters.
    ``batch_size`` defaults to :func:`default_batch_size` of the catalogue, and must be
    given with a score function (whose catalogue size is unknown here).
    """
    kind = task_filter(task)
    hist = as_ragged(histories)
    n_users = len(hist)
    if isinstance(model, tuple):
        user_emb, item_emb = model
        if len(user_emb) != n_users:
            raise ValueError(f"{len(user_emb)} user embeddings but {n_users} histories")
        item_t = item_emb.t()
        batch_size = batch_size or default_batch_size(len(item_emb))

        def score(start: int, stop: int) -> torch.Tensor:
            return user_emb[start:stop] @ item_t

    elif batch_size is None:
        raise ValueError("give batch_size with a score function")
    else:
        score = model
    out = np.empty((n_users, k), dtype=np.int64)
    out_scores = np.empty((n_users, k), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n_users, batch_size):
            stop = min(start + batch_size, n_users)
            scores = score(start, stop)
            batch = hist.rows(start, stop)
            items, values = topk(
                scores,
                k,
                exclude=batch if kind == "exclude" else None,
                only=batch if kind == "only" else None,
                inplace=True,
            )
            out[start:stop] = items.cpu().numpy()
            out_scores[start:stop] = values.float().cpu().numpy()
    return out, out_scores
