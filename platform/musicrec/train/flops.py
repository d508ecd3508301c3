"""Model FLOPs of a sequential training step, for tokens/s and model-FLOPs-utilisation figures.

Counted: the matrix products of the network as it computes them (QKV and output projections,
full L × L attention scores and weighted sums, the FFN, the output logits), forward and backward
(3× the forward), padding positions included since they are computed. Not counted: embedding
gathers, norms, softmaxes, the optimiser (all memory-bound, a small share of the arithmetic).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from musicrec.config.models import BERT4RecConfig, SequentialConfig

# Dense bf16 peaks from the vendors' datasheets (SXM parts), by a substring of the device name.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def forward_flops_per_token(config: SequentialConfig, length: int) -> float:
    """The backbone's forward FLOPs per position of a (batch, ``length``) input."""
    d, f = config.embedding_dim, config.ffn_dim
    block = 4 * d * d + 2 * length * d + 2 * d * f  # projections, attention (QKᵀ and AV), FFN: MACs
    return 2.0 * config.num_blocks * block


def step_flops(config: SequentialConfig, batch: Mapping[str, torch.Tensor], n_items: int) -> float:
    """Model FLOPs of one optimisation step on ``batch`` (forward and backward)."""
    b, length = batch["inputs"].shape
    d = config.embedding_dim
    forward = b * length * forward_flops_per_token(config, length)
    if isinstance(config, BERT4RecConfig) and config.softmax == "full":
        # Logits over the catalogue, for the masked positions only.
        forward += 2.0 * int((batch["targets"] != n_items).sum()) * n_items * d
    else:
        # The positive and the sampled negatives' logits, at every position.
        forward += 2.0 * b * length * (1 + config.negatives) * d
    return 3.0 * forward


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, where its datasheet figure is known (None on CPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)
