"""Tasks, sequence names, protocols, splits and event types (docs/tasks.md, docs/holdout.md, docs/temporal-split.md).

Every module that names a task, a sequence, a protocol or an event type takes it from here.
Each ``Literal`` type is the source of its tuple of values (``typing.get_args``), so a type
annotation and a runtime check can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Domain = Literal["track", "artist"]
Kind = Literal["lh", "disc", "fam"]
Filter = Literal["exclude", "only"]
Relation = Literal["absent", "present"]
ProtocolKind = Literal["holdout", "gts"]
Window = Literal["val", "test"]
Feedback = Literal["listen_plus", "like"]
Split = Literal["train", "val", "test"]
EventType = Literal["listen", "like", "dislike", "unlike", "undislike"]

DOMAINS: tuple[Domain, ...] = get_args(Domain)
KINDS: tuple[Kind, ...] = get_args(Kind)
PROTOCOL_KINDS: tuple[ProtocolKind, ...] = get_args(ProtocolKind)
WINDOWS: tuple[Window, ...] = get_args(Window)
FEEDBACKS: tuple[Feedback, ...] = get_args(Feedback)
# Index order is the split code of prep.holdout.user_split (0 train, 1 val, 2 test).
SPLITS: tuple[Split, ...] = get_args(Split)
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)

# §4: lh_track, disc_track, fam_track, lh_artist, disc_artist, fam_artist.
SEQUENCE_NAMES: tuple[str, ...] = tuple(f"{k}_{d}" for d in DOMAINS for k in KINDS)


def sequence_name(kind: Kind, domain: Domain) -> str:
    return f"{kind}_{domain}"


def parse_name(name: str) -> tuple[Kind, Domain]:
    """Split a sequence name such as ``disc_track`` into (kind, domain)."""
    if name not in SEQUENCE_NAMES:
        raise ValueError(f"unknown sequence name {name!r}; expected one of {', '.join(SEQUENCE_NAMES)}")
    kind, domain = name.split("_")
    return kind, domain  # type: ignore[return-value]


@dataclass(frozen=True)
class Task:
    """A prediction task of §5: what is predicted, from which sequence, among which candidates.

    ``kind`` is the ground-truth sequence's kind; everything else follows from it. A discovery
    task (``disc``: a new item) excludes the input history from the candidates and, in the GTS,
    targets the window's items absent from the training history; a familiar task (``fam``) is
    the converse; a plain next-item task (``lh``) has no filter and targets every window item.
    """

    name: str
    domain: Domain
    kind: Kind
    protocols: tuple[ProtocolKind, ...]

    @property
    def truth(self) -> str:
        """The ground-truth sequence (holdout): ``disc_track`` for T1, ..."""
        return sequence_name(self.kind, self.domain)

    @property
    def history(self) -> str:
        """The full history in the task's domain, which the candidate filter uses."""
        return sequence_name("lh", self.domain)

    @property
    def filter(self) -> Filter | None:
        return {"disc": "exclude", "fam": "only"}.get(self.kind)  # type: ignore[return-value]

    @property
    def relation(self) -> Relation | None:
        """GTS targets relative to the user's training history."""
        return {"disc": "absent", "fam": "present"}.get(self.kind)  # type: ignore[return-value]


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("next_track", "track", "lh", ("gts",)),
        Task("next_artist", "artist", "lh", ("gts",)),
        Task("T1", "track", "disc", ("holdout", "gts")),
        Task("T2", "track", "fam", ("holdout", "gts")),
        Task("T3", "artist", "disc", ("holdout", "gts")),
        Task("T4", "artist", "fam", ("holdout", "gts")),
    )
}
HOLDOUT_TASKS: tuple[str, ...] = tuple(n for n, t in TASKS.items() if "holdout" in t.protocols)
GTS_TASKS: tuple[str, ...] = tuple(n for n, t in TASKS.items() if "gts" in t.protocols)


def task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


def _check(value: object, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol and the ``protocol`` value of ``sequences`` and of results.

    ``holdout`` (the user-level holdout, §6), or ``gts_<window>_<feedback>`` (one stage of the
    global temporal split with one feedback setup, §7), e.g. ``gts_test_listen_plus``.
    """

    kind: ProtocolKind
    window: Window | None = None
    feedback: Feedback | None = None

    def __post_init__(self) -> None:
        _check(self.kind, PROTOCOL_KINDS, "protocol kind")
        if self.kind == "holdout":
            if self.window is not None or self.feedback is not None:
                raise ValueError("the holdout protocol has no window or feedback")
        else:
            _check(self.window, WINDOWS, "GTS window")
            _check(self.feedback, FEEDBACKS, "GTS feedback")

    @classmethod
    def gts(cls, window: str, feedback: str) -> Protocol:
        return cls("gts", window, feedback)  # type: ignore[arg-type]

    @classmethod
    def parse(cls, name: str) -> Protocol:
        if name == "holdout":
            return HOLDOUT
        window, _, feedback = name.removeprefix("gts_").partition("_")
        if not name.startswith("gts_") or window not in WINDOWS or feedback not in FEEDBACKS:
            raise ValueError(
                f"unknown protocol {name!r}; expected holdout or gts_<window>_<feedback> with window "
                f"{'|'.join(WINDOWS)} and feedback {'|'.join(FEEDBACKS)}"
            )
        return cls.gts(window, feedback)

    @property
    def name(self) -> str:
        return "holdout" if self.kind == "holdout" else f"gts_{self.window}_{self.feedback}"

    @property
    def tasks(self) -> tuple[str, ...]:
        return HOLDOUT_TASKS if self.kind == "holdout" else GTS_TASKS

    def __str__(self) -> str:
        return self.name


HOLDOUT = Protocol("holdout")
PROTOCOLS: tuple[Protocol, ...] = (HOLDOUT, *(Protocol.gts(w, f) for w in WINDOWS for f in FEEDBACKS))
