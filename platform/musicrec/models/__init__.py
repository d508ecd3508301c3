"""Model families behind one interface (:class:`~musicrec.models.base.Model`).

Families are looked up by name and imported on first use, so that loading one family
never pulls in the libraries of the others (torch for the transformers, implicit for MF).
"""

from __future__ import annotations

from importlib import import_module

from musicrec.models.base import Model, TrainingData
from musicrec.models.fitted import FittedModel, fit_model, load_model
from musicrec.models.items import ItemIndex, rows_by_key

# family -> "module:Class"; a new family is one line here and one module.
FAMILIES: dict[str, str] = {
    "mostpop": "musicrec.models.mostpop:MostPop",
    "transition": "musicrec.models.transition:Transition",
    "decaypop": "musicrec.models.decaypop:DecayPop",
    "itemknn": "musicrec.models.itemknn:ItemKNN",
    "als": "musicrec.models.als:ALS",
    "bpr": "musicrec.models.bpr:BPR",
    "ease": "musicrec.models.ease:EASE",
    "sasrec": "musicrec.models.sequential:SASRec",
    "gsasrec": "musicrec.models.sequential:GSASRec",
    "bert4rec": "musicrec.models.sequential:BERT4Rec",
}


def family_class(family: str) -> type[Model]:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    module, name = FAMILIES[family].split(":")
    return getattr(import_module(module), name)


__all__ = [
    "FAMILIES",
    "FittedModel",
    "ItemIndex",
    "Model",
    "TrainingData",
    "family_class",
    "fit_model",
    "load_model",
    "rows_by_key",
]
