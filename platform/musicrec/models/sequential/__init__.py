"""Sequential families on one transformer backbone: SASRec, gSASRec, BERT4Rec (docs/models.md)."""

from musicrec.models.sequential.families import (
    BERT4Rec,
    GSASRec,
    SASRec,
    SequentialModel,
    train_epoch,
)

__all__ = ["BERT4Rec", "GSASRec", "SASRec", "SequentialModel", "train_epoch"]
