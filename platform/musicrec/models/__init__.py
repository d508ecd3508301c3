"""Model families behind one interface (:class:`~musicrec.models.base.Model`).

Families are looked up by name and imported on first use, so that loading one family
never pulls in the libraries of the others (torch for the transformers, implicit for MF). The
interface itself is imported on first use too: ``musicrec.models.items`` (needed by the lake's
Arrow readers) must not cost a CLI that only checks its inputs the two seconds of importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musicrec.models.base import Model, TrainingData
    from musicrec.models.fitted import FittedModel, fit_model, load_model
    from musicrec.models.items import ItemIndex, rows_by_key

# name -> module that defines it, imported by ``__getattr__`` when first asked for.
_LAZY = {
    "Model": "musicrec.models.base",
    "TrainingData": "musicrec.models.base",
    "FittedModel": "musicrec.models.fitted",
    "fit_model": "musicrec.models.fitted",
    "load_model": "musicrec.models.fitted",
    "ItemIndex": "musicrec.models.items",
    "rows_by_key": "musicrec.models.items",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
