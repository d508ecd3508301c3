"""The window sampler: every event used once per epoch, determinism, worker shares equal to one
worker's batches, the per-user cap walking through the whole history, BERT4Rec masks."""

import numpy as np
import pytest
import torch

from musicrec.arrays import Ragged
from musicrec.config.models import BERT4RecConfig, GSASRecConfig
from musicrec.models import TrainingData
from musicrec.models.sequential import BERT4Rec, GSASRec
from musicrec.models.sequential.sampler import Tiling, epoch_windows, window_matrix


def data(lengths=(1, 2, 5, 9, 10, 23), n_items=50, seed=0):
    rng = np.random.default_rng(seed)
    return TrainingData.of([rng.integers(0, n_items, size=n) for n in lengths], n_items)


def gsasrec(**kw):
    settings = {"max_len": 4, "batch_size": 3, "negatives": 2, "embedding_dim": 8, "ffn_dim": 8, **kw}
    return GSASRec(GSASRecConfig(**settings), seed=5)


def pairs(batches, pad):
    """Every (input, target) pair a causal batch teaches, with the position of the target."""
    out = []
    for b in batches:
        inputs, targets = b["inputs"].numpy(), b["targets"].numpy()
        for row in range(len(inputs)):
            for col in np.flatnonzero(targets[row] != pad):
                out.append((tuple(inputs[row, : col + 1][inputs[row, : col + 1] != pad]), int(targets[row, col])))
    return out


def test_window_matrix_left_pads_the_events_before_each_end():
    items = Ragged.from_lists([[1, 2, 3, 4, 5], [6]])
    got = window_matrix(items, np.array([0, 0, 1]), np.array([5, 2, 1]), 3, pad=-1)
    assert got.tolist() == [[3, 4, 5], [-1, 1, 2], [-1, -1, 6]]


def test_window_matrix_of_only_empty_histories_is_all_padding():
    # A familiar-task model scoring histories of new items only: nothing survives its input derivation.
    got = window_matrix(Ragged.from_lists([[], []]), np.array([0, 1]), np.array([0, 0]), 3, pad=9)
    assert got.tolist() == [[9, 9, 9], [9, 9, 9]]


def test_every_event_but_the_first_is_a_target_once_per_epoch_with_its_true_prefix():
    d = data()
    model = gsasrec()
    model.init_network(d.n_items)
    seen = pairs(model.batches(d, epoch=0), model.n_items)
    targets = sorted(t for _, t in seen)
    expected = sorted(int(x) for row in d.items.to_lists() for x in row[1:])
    assert targets == expected
    # Each input is the (at most max_len) events right before its target in some user's history.
    rows = [list(map(int, r)) for r in d.items.to_lists()]
    for prefix, target in seen:
        assert len(prefix) <= 4
        assert any(
            r[i] == target and tuple(r[max(0, i - len(prefix)) : i]) == prefix for r in rows for i in range(1, len(r))
        )


def test_batches_are_deterministic_and_change_with_the_epoch():
    d = data()
    model = gsasrec()
    model.init_network(d.n_items)
    first = [{k: v.clone() for k, v in b.items()} for b in model.batches(d, 0)]
    again = list(model.batches(d, 0))
    assert all(all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(first, again, strict=True))
    other = list(model.batches(d, 1))
    assert any(not torch.equal(a["negatives"], b["negatives"]) for a, b in zip(first, other, strict=False))


@pytest.mark.parametrize("world_size", [2, 3])
def test_workers_share_the_global_batches_of_one_worker(world_size):
    d = data(lengths=(3, 7, 9, 12, 15, 4, 6))
    model = gsasrec(batch_size=5)
    model.init_network(d.n_items)
    single = list(model.batches(d, 2))
    shards = [list(model.batches(d, 2, rank=r, world_size=world_size)) for r in range(world_size)]
    assert all(len(s) == len(single) for s in shards)
    for g, whole in enumerate(single):
        parts = [s[g] for s in shards]
        assert sorted(pairs(parts, model.n_items)) == sorted(pairs([whole], model.n_items))
        assert torch.equal(torch.cat([p["negatives"] for p in parts]), whole["negatives"])
        # Each worker's scale makes the mean over workers equal the global mean.
        assert all(float(p["scale"]) == pytest.approx(world_size * float(whole["scale"])) for p in parts)


def test_a_worker_gradient_average_equals_the_single_worker_gradient():
    d = data(lengths=(3, 7, 9, 12, 15, 4, 6))
    model = gsasrec(batch_size=7, dropout=0.0)
    model.init_network(d.n_items)

    def grads(batch):
        model.network.zero_grad()
        model.network(batch).backward()
        return torch.cat([p.grad.flatten() for p in model.network.parameters()])

    whole = grads(next(iter(model.batches(d, 0))))
    parts = [grads(next(iter(model.batches(d, 0, rank=r, world_size=2)))) for r in range(2)]
    assert torch.allclose((parts[0] + parts[1]) / 2, whole, atol=1e-6)


def test_a_cap_per_user_rotates_through_the_whole_history():
    lengths = np.array([1, 50, 7])
    tiling = Tiling(span=5, stride=4, min_events=2)  # max_len 4: user 1 has 13 windows, user 2 has 2
    counts = tiling.counts(lengths)
    assert counts.tolist() == [0, 13, 2]
    covered = {1: set(), 2: set()}
    for epoch in range(7):
        rows, ends = epoch_windows(lengths, tiling, 2, seed=0, epoch=epoch)
        assert np.bincount(rows, minlength=3).tolist() == [0, 2, 2]
        for r, e in zip(rows, ends, strict=True):
            covered[int(r)].add(int(e))
    assert covered[1] == {50 - 4 * j for j in range(13)} and covered[2] == {7, 3}


def test_bert4rec_masks_a_share_of_real_positions_and_never_padding():
    d = data(lengths=(30,) * 40 + (2,), n_items=20)
    model = BERT4Rec(BERT4RecConfig(max_len=10, batch_size=256, mask_prob=0.3, embedding_dim=8, ffn_dim=8), seed=1)
    model.init_network(d.n_items)
    (batch,) = list(model.batches(d, 0))
    inputs, targets = batch["inputs"].numpy(), batch["targets"].numpy()
    masked = inputs == model.mask_token
    assert np.array_equal(masked, targets != model.n_items)
    assert masked.any(axis=1).all()  # every window teaches something
    assert 0.2 < masked.sum() / (inputs != model.n_items).sum() < 0.4
    assert batch["negatives"].shape == (len(inputs), model.config.negatives)
    assert float(batch["scale"]) == pytest.approx(1 / masked.sum())
