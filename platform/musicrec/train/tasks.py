"""Which tasks a training sequence serves, and which one's validation users judge a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from musicrec.config import Config
from musicrec.contract import TASKS, Protocol, parse_name, task
from musicrec.errors import InputError

if TYPE_CHECKING:
    from musicrec.models import FittedModel


def model_name(config: Config) -> str:
    """A trained model's name: its family and training sequence, with k when condensed."""
    t = config.train
    return f"{config.model.family}[{t.sequence}]" if t.k == 1 else f"{config.model.family}[{t.sequence}({t.k})]"


def sequence_tasks(sequence: str) -> tuple[str, ...]:
    """The tasks a model trained on ``sequence`` serves (paper 000): a listening history every task
    of its domain through the candidate filter, a task's own sequence only that task."""
    kind, domain = parse_name(sequence)
    if kind == "lh":
        return tuple(n for n, t in TASKS.items() if t.domain == domain)
    return tuple(n for n, t in TASKS.items() if t.truth == sequence)


def truth_task(sequence: str) -> str:
    """The task whose ground truth ``sequence`` is (``lh_track``: ``next_track``, ``disc_track``: T1)."""
    return next(n for n, t in TASKS.items() if t.truth == sequence)


def validation_task(config: Config) -> str:
    """``train.task``, or the task the training sequence serves (holdout: lh/disc discovery, fam
    familiar; GTS: the task the sequence is the truth of, ``lh_track``: ``next_track``)."""
    if Protocol.parse(config.train.protocol).kind == "gts":
        return config.train.task or truth_task(config.train.sequence)
    kind, domain = parse_name(config.train.sequence)
    default = {("track", False): "T1", ("track", True): "T2", ("artist", False): "T3", ("artist", True): "T4"}
    name = config.train.task or default[(domain, kind == "fam")]
    if task(name).domain != domain:
        raise InputError(f"train.task={name} is a {task(name).domain} task but train.sequence={config.train.sequence}")
    return name


def validation_examples(lake_root: str, dataset: str, protocol: str, task_name: str):
    """The validation users of ``task_name`` under the training ``protocol``: the holdout's validation
    split, or the GTS validation window (whose inputs are the validation stage's sequences)."""
    from musicrec.lake.readers import load_gts, load_holdout

    p = Protocol.parse(protocol)
    if p.kind == "holdout":
        return load_holdout(lake_root, dataset, "val", [task_name])[0]
    return load_gts(lake_root, dataset, "val", p.feedback, [task_name])[0]


def validation_ndcg(fitted: FittedModel, examples, batch_size: int, protocol: str = "holdout") -> float:
    """NDCG@100 of ``fitted`` on the task's validation ``examples`` (what picks epochs and trials)."""
    from musicrec.evaluate.protocols import EvalOptions, evaluate_task

    options = EvalOptions(ks=(100,), metrics=("ndcg",), batch_size=batch_size)
    rows = evaluate_task(fitted, examples, protocol, "val", options)
    return float(next(r["value"] for r in rows if r["metric"] == "ndcg" and r["k"] == 100))
