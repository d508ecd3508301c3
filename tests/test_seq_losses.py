"""Sequential objectives: gBCE against a direct float64 evaluation, numerical safety, t = 0 is BCE,
alpha over real items only, and logits without the (B, T, k+1, d) gather."""

import numpy as np
import pytest
import torch

from musicrec.config.models import GSASRecConfig
from musicrec.models.sequential import GSASRec, losses


def direct_gbce(pos, neg, alpha, t):
    """Paper 000 eq. (2) evaluated literally in float64, averaged over positions."""
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    per = -(np.log(sig(pos) ** beta) + np.log(1 - sig(neg)).sum(-1)) / (neg.shape[-1] + 1)
    return per.mean()


def ours(pos, neg, alpha, t, dtype=torch.float32):
    p, n = torch.tensor(pos, dtype=dtype), torch.tensor(neg, dtype=dtype)
    valid = torch.ones(p.shape, dtype=torch.bool)
    total = losses.gbce(p, n, valid, torch.ones(n.shape, dtype=torch.bool), losses.gbce_beta(alpha, t))
    return float(total) / valid.sum().item()


@pytest.mark.parametrize("alpha,t", [(0.17113, 0.55591), (0.01, 0.9), (1.0, 0.3), (0.5, 1.0)])
def test_gbce_equals_the_formula_in_float64(alpha, t):
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0, 3, size=(4, 7)), rng.normal(0, 3, size=(4, 7, 25))
    assert ours(pos, neg, alpha, t) == pytest.approx(direct_gbce(pos, neg, alpha, t), rel=1e-5)


def test_gbce_is_finite_with_finite_gradients_for_extreme_logits():
    pos = torch.tensor([[50.0, -50.0, 0.0]], requires_grad=True)
    neg = torch.tensor([[[50.0, -50.0], [-50.0, 50.0], [0.0, 0.0]]], requires_grad=True)
    loss = losses.gbce(pos, neg, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, 2, dtype=torch.bool), 0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    # -log sigma(-50)^beta = beta * 50 (the raw power sigma(-50)^beta underflows in float32).
    assert float(loss.detach()) == pytest.approx((0.2 * 50 + 50 + 50 + 2 * np.log(2) + 0.2 * np.log(2)) / 3, rel=1e-5)


def test_t_zero_is_bce_on_sampled_negatives():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(size=(3, 5)), rng.normal(size=(3, 5, 4))
    logits = torch.cat([torch.tensor(pos)[..., None], torch.tensor(neg)], -1)
    labels = torch.zeros_like(logits)
    labels[..., 0] = 1
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)  # mean over (k+1) and positions
    assert losses.gbce_beta(0.3, 0.0) == pytest.approx(1.0)
    assert ours(pos, neg, 0.3, 0.0, torch.float64) == pytest.approx(float(bce), rel=1e-9)


def test_alpha_counts_real_items_only():
    model = GSASRec(GSASRecConfig(gbce_alpha=None, negatives=5, embedding_dim=8, ffn_dim=8, max_len=4), seed=0)
    model.init_network(11)
    assert model.alpha == 5 / 10  # 11 items: padding is a table row but not an item
    assert model.network.backbone.items.num_embeddings == 12
    assert model.network.beta == pytest.approx(losses.gbce_beta(0.5, model.config.gbce_t))
    with pytest.raises(ValueError, match="at least 2 items"):
        losses.sampling_rate(5, 1)


def test_logits_equal_the_materialised_gather():
    g = torch.Generator().manual_seed(0)
    hidden, table = torch.randn(3, 6, 8, generator=g), torch.randn(20, 8, generator=g)
    targets, negatives = torch.randint(0, 20, (3, 6), generator=g), torch.randint(0, 20, (3, 4), generator=g)
    pos, neg = losses.sampled_logits(hidden, table, targets, negatives)
    # The official code's form: gather (B, T, k+1, d) and contract.
    both = torch.cat([targets[..., None], negatives[:, None, :].expand(3, 6, 4)], -1)
    full = torch.einsum("btd,btnd->btn", hidden, table[both])
    assert torch.allclose(pos, full[..., 0], atol=1e-5) and torch.allclose(neg, full[..., 1:], atol=1e-5)


def test_a_negative_equal_to_the_positive_is_masked_out():
    model = GSASRec(GSASRecConfig(negatives=3, embedding_dim=8, ffn_dim=8, max_len=4, dropout=0.0), seed=0)
    model.init_network(5)
    base = {"inputs": torch.tensor([[0, 1]]), "targets": torch.tensor([[1, 2]]), "scale": torch.tensor(1.0)}
    with_collision = model.network({**base, "negatives": torch.tensor([[2, 3, 4]])})
    # Position 1's positive (2) is also a negative: its term is dropped, position 0 keeps all three.
    hidden = model.network.backbone.encode(base["inputs"])
    table = model.network.backbone.items.weight
    pos, neg = losses.sampled_logits(hidden, table, base["targets"], torch.tensor([[2, 3, 4]]))
    pos, neg = pos + model.network.offset, neg + model.network.offset
    mask = torch.tensor([[[True, True, True], [False, True, True]]])
    expected = losses.gbce(pos, neg, torch.ones(1, 2, dtype=torch.bool), mask, model.network.beta)
    assert float(with_collision) == pytest.approx(float(expected), rel=1e-6)
    assert float(with_collision) < float(losses.gbce(pos, neg, torch.ones(1, 2, dtype=torch.bool), torch.ones_like(mask), model.network.beta))

