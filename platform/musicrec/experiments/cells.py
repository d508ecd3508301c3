"""What the grid trains: each cell expanded into training runs, and each run's config (pure).

A general cell trains once per domain of the grid's tasks (``lh_track``, ``lh_artist``) and serves
every task of that domain through the candidate filter; an on-task cell trains once per task, on the
task's own sequence. A fine-tuned run starts from its parent cell's general run of the same domain.
A baseline trains once per feedback setup on the listening history under the GTS: a classic family
on the test stage, a sequential one on the validation stage, whose window picks its epoch (both are
tested on the test window).
"""

from __future__ import annotations

from dataclasses import dataclass

from musicrec.config import Config
from musicrec.config.grid import GridCell, GridConfig
from musicrec.config.models import CLASSIC_FAMILIES
from musicrec.contract import TASKS, Protocol
from musicrec.train.tasks import sequence_tasks

# Tags of a grid's training runs: what the report reads rows and columns from.
MODEL_TAG = "grid.model"
APPROACH_TAG = "grid.approach"
SHUFFLE_TAG = "grid.shuffle"
FEEDBACK_TAG = "grid.feedback"  # a baseline run (GTS): its feedback setup
BASELINE = "baseline (GTS)"  # the approach tag of a baseline run


@dataclass(frozen=True)
class GridRun:
    model: str  # the grid.models key
    cell: GridCell
    sequence: str
    tasks: tuple[str, ...]  # the grid's tasks this run serves (and is reported on)
    parent: tuple[str, str] | None = None  # (model, sequence) of the general run fine-tuned from

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model, self.cell.label, self.sequence


def plan_runs(grid: GridConfig) -> list[GridRun]:
    """Every training run of the grid, in an order where a parent run precedes its fine-tuned ones."""
    runs = []
    for cell in grid.cells:
        if cell.training == "general":
            sequences = dict.fromkeys(TASKS[name].history for name in grid.tasks)
        else:
            sequences = dict.fromkeys(TASKS[name].truth for name in grid.tasks)
        for sequence in sequences:
            tasks = tuple(name for name in grid.tasks if name in sequence_tasks(sequence))
            parent = (cell.fine_tune_from, f"lh_{TASKS[tasks[0]].domain}") if cell.fine_tune_from else None
            runs.append(GridRun(cell.model, cell, sequence, tasks, parent))
    return runs


@dataclass(frozen=True)
class BaselineRun:
    model: str  # the grid.models key
    feedback: str
    sequence: str
    protocol: str  # the GTS stage trained on


def plan_baselines(grid: GridConfig) -> list[BaselineRun]:
    b = grid.baselines
    runs = []
    for model in b.models:
        window = "test" if grid.models[model].family in CLASSIC_FAMILIES else "val"
        runs += [BaselineRun(model, feedback, b.sequence, Protocol.gts(window, feedback).name) for feedback in b.feedbacks]
    return runs


def baseline_config(config: Config, run: BaselineRun, version: int) -> Config:
    """The ``train`` config of one baseline: the model fitted on its GTS stage's training sequences at
    ``version``, and tested on the test window by its trainer."""
    return _train_config(config, run.model, version, shuffle=False, protocol=run.protocol, sequence=run.sequence, k=1)


def run_config(config: Config, run: GridRun, version: int, parent_run_id: str = "") -> Config:
    """The ``train`` config of one grid run: the cell's model, sequence and k on `sequences` at
    ``version`` (every run of a grid reads the same data, so their metrics compare); shuffled
    evaluation when the cell asks; registering is the grid's (after every run, so promotion
    compares them all)."""
    return _train_config(config, run.model, version, shuffle=run.cell.shuffle, sequence=run.sequence, k=run.cell.k,
                         init_from=parent_run_id)


def _train_config(config: Config, model: str, version: int, *, shuffle: bool, **train: object) -> Config:
    """``config`` training ``grid.models[model]`` on `sequences` at ``version`` with the ``train.*``
    settings given; validated on the sequence's own task, never registered by the run itself."""
    data = config.model_dump(mode="json")
    data["model"] = config.grid.models[model].model_dump(mode="json")
    data["train"] = {**data["train"], "task": None, "sequences_version": version, "init_from": "", "register": False,
                     **train}
    data["evaluate"] = {**data["evaluate"], "shuffle": shuffle}
    return Config.model_validate(data)
