"""Ranking benchmark (``musicrec bench evaluate``): exact filtered top-K against a bare matmul + top-k."""

from __future__ import annotations

import time

import numpy as np
import torch

from musicrec.arrays import Ragged
from musicrec.evaluate.ranking import default_batch_size, rank_users


def bench_evaluate(
    n_users: int = 10_000,
    n_items: int = 160_000,
    dim: int = 64,
    k: int = 100,
    task: str = "T1",
    history_len: int = 500,
    batch_size: int | None = None,
    seed: int = 0,
) -> dict[str, float | str]:
    """Users/s of filtered exact top-k vs a bare batched matmul + ``torch.topk``.

    Both run on the same random embeddings and batch size, interleaved batch by batch
    (alternating which goes first) so that load from other processes hits both alike;
    rates come from the median batch time over full batches. Each user has
    ``history_len`` random history items for the filter. Spec bar: ratio >= 0.7.
    """
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.randn(n_users, dim, generator=gen)
    item_emb = torch.randn(n_items, dim, generator=gen)
    rng = np.random.default_rng(seed)
    hist = Ragged(
        rng.integers(0, n_items, size=n_users * history_len),
        np.arange(n_users + 1, dtype=np.int64) * history_len,
    )
    bs = min(batch_size or default_batch_size(n_items), n_users)

    def run(name: str, start: int, stop: int) -> None:
        if name == "bare":
            torch.topk(user_emb[start:stop] @ item_emb.t(), k, dim=1)
        else:
            rank_users((user_emb[start:stop], item_emb), hist.rows(start, stop), task, k, bs)

    times: dict[str, list[float]] = {"bare": [], "filtered": []}
    with torch.inference_mode():
        for i, start in enumerate(range(0, n_users - bs + 1, bs)):
            for name in ("bare", "filtered") if i % 2 == 0 else ("filtered", "bare"):
                t0 = time.perf_counter()
                run(name, start, start + bs)
                times[name].append(time.perf_counter() - t0)
    # Medians over full batches shrug off the load spikes of a shared machine.
    bare_s, filtered_s = float(np.median(times["bare"])), float(np.median(times["filtered"]))
    return {
        "n_users": n_users,
        "n_items": n_items,
        "dim": dim,
        "k": k,
        "task": task,
        "batch_size": bs,
        "threads": torch.get_num_threads(),
        "batches": len(times["bare"]),
        "bare_users_per_s": bs / bare_s,
        "filtered_users_per_s": bs / filtered_s,
        "ratio": bare_s / filtered_s,
    }
