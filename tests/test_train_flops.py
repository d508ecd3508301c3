"""Model FLOPs of a training step (tokens/s and MFU figures) against PyTorch's own FLOP counter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from musicrec.arrays import Ragged
from musicrec.models import ItemIndex, TrainingData, family_class
from musicrec.train.flops import peak_flops, step_flops


@pytest.mark.parametrize(
    ("family", "settings"),
    [("gsasrec", {"negatives": 7}), ("sasrec", {}), ("bert4rec", {"softmax": "sampled", "negatives": 5}),
     ("bert4rec", {"softmax": "full"})],
)
def test_step_flops_equal_the_counted_matrix_products(family, settings):
    rng = np.random.default_rng(0)
    seqs = Ragged.from_lists([(s + np.cumsum(rng.integers(1, 4, 31))) % 900 for s in rng.integers(0, 900, 40)])
    items = ItemIndex.from_items(seqs.values)
    cls = family_class(family)
    config = cls.Config.model_validate(
        {"family": family, "embedding_dim": 16, "ffn_dim": 24, "num_blocks": 2, "max_len": 30, "batch_size": 40, **settings}
    )
    model = cls(config, seed=0)
    model.init_network(len(items))
    batch = next(model.batches(TrainingData(items.map_rows(seqs)[0], len(items)), 0))
    with FlopCounterMode(display=False) as counter:
        model.network(batch).backward()
    # PyTorch's counter does not see the CPU attention kernel: its QKᵀ and AV products are added here,
    # 2 MACs-per-element products of (L × d)(d × L) and (L × L)(L × d) per block, times 3 for backward.
    b, length = batch["inputs"].shape
    attention = 3 * config.num_blocks * 2 * (2 * b * length * length * config.embedding_dim)
    assert step_flops(config, batch, model.n_items) == counter.get_total_flops() + attention


def test_no_peak_is_claimed_for_a_cpu():
    assert peak_flops(torch.device("cpu")) is None
