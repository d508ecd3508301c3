"""Training objectives of the sequential families (docs/models.md): BCE / gBCE with sampled
negatives and the BERT4Rec cloze loss, on logits computed without a (B, T, k+1, d) tensor.

Negatives are drawn per window (k items shared by all positions of one training sequence):
the negative logits are then one batched matmul (B, T, d) x (B, d, k) from a (B, k, d) gather,
instead of the (B, T, k+1, d) gather of the official gSASRec code (docs/models.md trap 5). Each
position still sees k uniform negatives; they are only correlated along a sequence. A
negative that equals the position's positive is masked out of that position's loss (trap 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sampling_rate(negatives: int, n_items: int) -> float:
    """gBCE's default alpha: k / (|I| - 1) over real items only (padding and [MASK] are not items)."""
    if n_items < 2:
        raise ValueError("gBCE needs at least 2 items")
    return negatives / (n_items - 1)


def gbce_beta(alpha: float, t: float) -> float:
    """beta = alpha (t (1 - 1/alpha) + 1/alpha); t = 0 gives beta = 1, i.e. plain BCE."""
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def sampled_logits(
    hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive logits (B, T) and negative logits (B, T, k) for hidden (B, T, d), the output
    table (N, d), target rows (B, T) and per-sequence negative rows (B, k)."""
    positive = torch.einsum("btd,btd->bt", hidden, table[targets])
    negative = torch.bmm(hidden, table[negatives].transpose(1, 2))
    return positive, negative


def gbce(
    positive: torch.Tensor, negative: torch.Tensor, valid: torch.Tensor, negative_valid: torch.Tensor, beta: float
) -> torch.Tensor:
    """Sum over ``valid`` positions of -(1/(k+1)) [log sigma(s+)^beta + sum log(1 - sigma(s-))].

    In log space: log sigma(s)^beta = -beta softplus(-s) and log(1 - sigma(s)) = -softplus(s),
    finite and with finite gradients for any float32 logit (no power of a probability near 0).
    """
    k = negative.shape[-1]
    per_position = beta * F.softplus(-positive) + (F.softplus(negative) * negative_valid).sum(-1)
    return (per_position * valid).sum() / (k + 1)


def cloze(positive: torch.Tensor, negative: torch.Tensor, negative_valid: torch.Tensor) -> torch.Tensor:
    """Summed sampled-softmax cross-entropy of each positive (M,) against its negatives (M, k)."""
    logits = torch.cat([positive[:, None], negative.masked_fill(~negative_valid, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), reduction="sum")


def full_cloze(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of hidden (M, d) over the whole catalogue ``table`` (n_items, d)."""
    return F.cross_entropy(hidden @ table.T, targets, reduction="sum")
