"""Typed settings of the model families, one pydantic class per family keyed on ``family``.

Pydantic only (no torch): the config loader validates a ``model:`` section without importing
any model library. Defaults of the sequential families are paper 000's gSASRec (Table 2).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from musicrec.config.schema import Section


class SequentialConfig(Section):
    """One transformer backbone (docs/models.md "Sequential models"); the subclasses pick the objective."""

    embedding_dim: int = Field(128, ge=1)
    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)
    ffn_dim: int = Field(128, ge=1)
    dropout: float = Field(0.09496, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.35520, ge=0.0)
    learning_rate: float = Field(0.0031805, gt=0.0)
    batch_size: int = Field(512, ge=1)
    max_epochs: int = Field(100, ge=1)
    # gBCE has a kick-off delay before validation metrics rise (docs/models.md trap 2): counted in epochs.
    patience: int = Field(10, ge=1)
    # The most recent events a window (training) or an input (scoring) holds.
    max_len: int = Field(200, ge=2)
    negatives: int = Field(25, ge=1)
    # Windows per user per epoch: None takes every window, so every training event is a target
    # once per epoch and a user weighs in proportion to their events; a cap n takes n windows
    # per epoch, rotating so that the whole history is still covered every ceil(windows / n) epochs.
    windows_per_user: int | None = Field(None, ge=1)
    # How the item-embedding table starts (docs/models.md "Item-embedding initialisation from audio").
    item_init: Literal["random", "audio_init", "late_fusion"] = "random"

    @model_validator(mode="after")
    def _heads(self) -> SequentialConfig:
        if self.embedding_dim % self.num_heads:
            raise ValueError("embedding_dim must be a multiple of num_heads")
        return self


class SASRecConfig(SequentialConfig):
    """SASRec: BCE with sampled negatives (gBCE with beta = 1)."""

    family: Literal["sasrec"] = "sasrec"
    negatives: int = Field(1, ge=1)


class GSASRecConfig(SequentialConfig):
    """gSASRec: gBCE; ``gbce_alpha`` None means the sampling rate k / (n_items - 1) over real items."""

    family: Literal["gsasrec"] = "gsasrec"
    gbce_alpha: float | None = Field(0.17113, gt=0.0, le=1.0)
    gbce_t: float = Field(0.55591, ge=0.0, le=1.0)


class BERT4RecConfig(SequentialConfig):
    """BERT4Rec: bidirectional blocks, cloze objective over masked positions."""

    family: Literal["bert4rec"] = "bert4rec"
    mask_prob: float = Field(0.2, gt=0.0, lt=1.0)
    # full: softmax over the whole catalogue; sampled: over the positive and ``negatives`` uniform items.
    softmax: Literal["full", "sampled"] = "sampled"
    negatives: int = Field(256, ge=1)
