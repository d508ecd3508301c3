"""The one transformer of the sequential families (docs/models.md "Sequential models").

Item rows 0..n_items-1 are the catalogue in dense-index order; row ``n_items`` is padding and,
for BERT4Rec, row ``n_items + 1`` is [MASK]: neither is ever scored as an item. The item table
is also the output embedding (score = hidden · item row).

Sequences are left-padded and positions are counted from the end, so the most recent item
always sits at position ``max_len - 1`` whatever the batch width: a batch can be trimmed to its
longest row (short ``disc_*`` sequences cost what they hold, not ``max_len``) and scoring sees
the same positions as training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Small, as in the SASRec re-implementations that converge: PyTorch's default N(0, 1) for
# embeddings leaves BCE/gBCE stuck at popularity level (docs/models.md trap 1).
EMBEDDING_STD = 0.02


def item_table(n_items: int, n_special: int, dim: int, item_init: str) -> nn.Embedding:
    """The item-embedding table: the one place an item initialisation (audio, a later issue) plugs in."""
    if item_init != "random":
        raise ValueError(f"item_init {item_init!r} needs the tracks' audio embeddings, which are not wired in yet")
    table = nn.Embedding(n_items + n_special, dim, padding_idx=n_items)
    nn.init.trunc_normal_(table.weight, std=EMBEDDING_STD, a=-2 * EMBEDDING_STD, b=2 * EMBEDDING_STD)
    with torch.no_grad():
        table.weight[n_items].zero_()
    return table


class Block(nn.Module):
    """Pre-norm self-attention block (SASRec's layout with standard multi-head attention).

    Dropout acts on the block's two outputs, not on the attention probabilities: attention-weight
    dropout forces PyTorch's unfused attention (a (B, h, T, T) tensor and its random mask),
    which costs more on CPU than the rest of the block.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        x = x + self.drop(self.attn_out(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ffn_out(F.relu(self.ffn_in(self.ffn_norm(x)))))


class Backbone(nn.Module):
    def __init__(
        self,
        n_items: int,
        n_special: int,
        *,
        dim: int,
        blocks: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        max_len: int,
        causal: bool,
        item_init: str = "random",
    ) -> None:
        super().__init__()
        self.n_items, self.pad, self.max_len, self.causal = n_items, n_items, max_len, causal
        self.items = item_table(n_items, n_special, dim, item_init)
        # SASRec's input scaling: item rows times sqrt(d), so that an input carries its item far
        # above its position. Without it (rows of std 0.02, as the positions) training sat at
        # popularity level for most of its epochs (docs/models.md trap 2's "kick-off delay").
        self.input_scale = dim**0.5
        self.positions = nn.Embedding(max_len, dim)
        nn.init.trunc_normal_(self.positions.weight, std=EMBEDDING_STD, a=-2 * EMBEDDING_STD, b=2 * EMBEDDING_STD)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn_dim, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        for block in self.blocks:
            for layer in (block.qkv, block.attn_out, block.ffn_in, block.ffn_out):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def item_weights(self) -> torch.Tensor:
        """(n_items, d) output embeddings of the real items (padding and [MASK] rows excluded)."""
        return self.items.weight[: self.n_items]

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) of left-padded item rows (B, T), T <= max_len."""
        t = seqs.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequences of {t} items exceed max_len {self.max_len}")
        x = self.items(seqs) * self.input_scale + self.positions.weight[self.max_len - t :]
        x = self.drop(x)
        real = seqs != self.pad
        mask = None
        if not bool(real.all()):
            # Padding is never attended to; a padding query attends to itself only so that its
            # softmax row is defined (its output is never used).
            eye = torch.eye(t, dtype=torch.bool, device=seqs.device)
            allowed = real[:, None, None, :] | eye
            mask = allowed & torch.ones(t, t, dtype=torch.bool, device=seqs.device).tril() if self.causal else allowed
        for block in self.blocks:
            x = block(x, mask, self.causal)
        return self.norm(x)
