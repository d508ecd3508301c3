"""The ``grid`` section: paper 000's experiment grid (models x training approaches on tasks T1-T4),
and paper 002's baseline table (models x feedback setups under the global temporal split).

A cell is one row of the results table for one model: a training approach (``general``: the
``lh_*`` listening history, every task of its domain through the candidate filter; ``on_task``: the
task's own ``disc_*``/``fam_*`` sequence, k-condensed), optionally fine-tuned from the model's general
cell, optionally also evaluated with shuffled inputs. Which runs a cell expands to is decided in
:mod:`musicrec.experiments.cells`; this module only says what a valid grid is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from musicrec.config.models import CLASSIC_FAMILIES, ModelConfig
from musicrec.config.section import Section
from musicrec.contract import FEEDBACKS, HOLDOUT_TASKS, Feedback


class GridCell(Section):
    model: str  # a key of grid.models
    training: Literal["general", "on_task"]
    k: int = Field(1, ge=1)  # condensation of the on-task sequence (the general one is never condensed)
    # Start from the general cell of this grid.models key (same family, a sequential one): paper 000's
    # "fine-tuned on task" rows.
    fine_tune_from: str = ""
    shuffle: bool = False  # also evaluate with each input sequence permuted (paper 000 §4.7)

    @property
    def label(self) -> str:
        """The table's row: cells of different models with the same approach share it."""
        if self.training == "general":
            return "general + filter"
        return f"fine-tuned on task (k={self.k})" if self.fine_tune_from else f"on task (k={self.k})"

    @model_validator(mode="after")
    def _approach(self) -> GridCell:
        if self.training == "general" and (self.k != 1 or self.fine_tune_from):
            raise ValueError("a general cell trains on the whole listening history: k=1 and no fine_tune_from")
        return self


class GtsBaselines(Section):
    """Paper 002's baseline table (Tables 6-7): each model trained under the global temporal split with
    each feedback setup and evaluated on the test window, next item over the whole catalogue. A
    classic family trains on the test stage (every event before the test window's gap); a sequential
    one on the validation stage, whose window picks its epoch."""

    models: list[str] = Field(default_factory=list)  # keys of grid.models, in the table's row order
    feedbacks: list[Feedback] = Field(default_factory=lambda: list(FEEDBACKS), min_length=1)
    sequence: Literal["lh_track", "lh_artist"] = "lh_track"  # next_track or next_artist

    @field_validator("feedbacks")
    @classmethod
    def _feedbacks(cls, feedbacks: list[str]) -> list[str]:
        if len(set(feedbacks)) != len(feedbacks):
            raise ValueError(f"must be distinct, got {feedbacks}")
        return feedbacks


class GridConfig(Section):
    """``musicrec grid`` (the pipeline's training step) and ``musicrec report``; no cells and no
    baselines: no grid."""

    tasks: list[str] = Field(default_factory=lambda: list(HOLDOUT_TASKS), min_length=1)
    models: dict[str, ModelConfig] = Field(default_factory=dict)  # name -> family and its settings
    cells: list[GridCell] = Field(default_factory=list)
    baselines: GtsBaselines = GtsBaselines()

    @property
    def declared(self) -> bool:
        return bool(self.cells or self.baselines.models)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[str]) -> list[str]:
        wrong = [name for name in tasks if name not in HOLDOUT_TASKS]
        if wrong or len(set(tasks)) != len(tasks):
            raise ValueError(f"must be distinct holdout tasks ({', '.join(HOLDOUT_TASKS)}), got {tasks}")
        return tasks

    @model_validator(mode="after")
    def _cells(self) -> GridConfig:
        seen: set[tuple[str, str]] = set()
        general: set[str] = set()
        for i, cell in enumerate(self.cells):
            where = f"cells[{i}]"
            if cell.model not in self.models:
                raise ValueError(f"{where}.model={cell.model!r} is not a key of grid.models ({', '.join(self.models)})")
            if (cell.model, cell.label) in seen:
                raise ValueError(f"{where}: {cell.model} has two '{cell.label}' cells")
            seen.add((cell.model, cell.label))
            if cell.fine_tune_from:
                parent = cell.fine_tune_from
                family = self.models[cell.model].family
                if family in CLASSIC_FAMILIES:
                    raise ValueError(f"{where}: {family} cannot be fine-tuned (only the sequential families)")
                # Declared first, so that its runs exist when this cell starts.
                if parent not in general:
                    raise ValueError(f"{where}.fine_tune_from={parent!r}: no general cell of it is declared before")
                if self.models[parent].family != family:
                    raise ValueError(f"{where}.fine_tune_from={parent!r} is a {self.models[parent].family} model, not {family}")
            if cell.training == "general":
                general.add(cell.model)
        for name in self.baselines.models:
            if name not in self.models:
                raise ValueError(f"baselines.models: {name!r} is not a key of grid.models ({', '.join(self.models)})")
        if len(set(self.baselines.models)) != len(self.baselines.models):
            raise ValueError(f"baselines.models must be distinct, got {self.baselines.models}")
        return self
