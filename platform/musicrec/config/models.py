"""One typed config per model family, chosen by ``model.family`` (a pydantic discriminated union).

Pydantic only (no torch, no implicit), so that loading a config stays fast. Defaults of the
sequential families are paper 000's gSASRec (Table 2). Each family class in
``musicrec.models`` sets its ``Config`` to its class here. A new family is one class below and one
entry in ``ModelConfig``; keys of one family are unknown keys for another.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from musicrec.config.section import Section


class FamilyConfig(Section):
    family: str


class MostPopConfig(FamilyConfig):
    family: Literal["mostpop"] = "mostpop"


class TransitionConfig(FamilyConfig):
    family: Literal["transition"] = "transition"


class DecayPopConfig(FamilyConfig):
    """Σ tau^((t_max − t) / decay_hours) per item over the training events (models.md)."""

    family: Literal["decaypop"] = "decaypop"
    decay_hours: float = Field(24.0, gt=0.0)
    tau: float = Field(0.9, gt=0.0, le=1.0)


class ItemKNNConfig(FamilyConfig):
    """Cosine item–item similarity, top ``neighbours`` per item; a history item ``d`` positions
    before the last one weighs ``recency ** d`` (1.0: every position alike)."""

    family: Literal["itemknn"] = "itemknn"
    neighbours: int = Field(100, ge=1)
    recency: float = Field(0.9, gt=0.0, le=1.0)


class ALSConfig(FamilyConfig):
    """implicit's ALS (Hu, Koren, Volinsky); defaults are paper 000's (§4.2)."""

    family: Literal["als"] = "als"
    factors: int = Field(20, ge=1)
    iterations: int = Field(15, ge=1)
    regularization: float = Field(0.1, ge=0.0)
    alpha: float = Field(1.0, gt=0.0)
    # binary: whether the item appears in the user's training sequence (paper 000); counts: how often.
    values: Literal["binary", "counts"] = "binary"
    use_cg: bool = True
    num_threads: int = Field(0, ge=0)  # 0: every core


class BPRConfig(FamilyConfig):
    """implicit's BPR (binary matrix: implicit ignores the values)."""

    family: Literal["bpr"] = "bpr"
    factors: int = Field(64, ge=1)
    iterations: int = Field(100, ge=1)
    learning_rate: float = Field(0.01, gt=0.0)
    regularization: float = Field(0.01, ge=0.0)
    verify_negative_samples: bool = True
    # implicit's BPR is Hogwild SGD: with more than one thread a refit is not bit-for-bit repeatable.
    num_threads: int = Field(1, ge=0)


class EASEConfig(FamilyConfig):
    """EASE's closed form (Steck 2019): a dense item × item matrix, so catalogues up to ``max_items``."""

    family: Literal["ease"] = "ease"
    l2: float = Field(500.0, gt=0.0)
    max_items: int = Field(10_000, ge=1)


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


ModelConfig = Annotated[
    MostPopConfig
    | TransitionConfig
    | DecayPopConfig
    | ItemKNNConfig
    | ALSConfig
    | BPRConfig
    | EASEConfig
    | SASRecConfig
    | GSASRecConfig
    | BERT4RecConfig,
    Field(discriminator="family"),
]

# Every family's name, from the union above (the registry's model names use them).
FAMILY_NAMES: tuple[str, ...] = tuple(
    get_args(member.model_fields["family"].annotation)[0] for member in get_args(get_args(ModelConfig)[0])
)

# Families that train as one Ray task (not data-parallel); the others train under Ray Train.
ClassicFamily = Literal["mostpop", "transition", "decaypop", "itemknn", "als", "bpr", "ease"]
CLASSIC_FAMILIES: tuple[str, ...] = get_args(ClassicFamily)
