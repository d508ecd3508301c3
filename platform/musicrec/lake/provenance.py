"""Who wrote a table version: every Delta commit carries the MLflow run and config that made it.

The verb runner opens :func:`recording` around a verb; every commit staged inside it records the
metadata (``lake.delta.stage``) as the commit's ``userMetadata``, a JSON string, on both write
paths. :func:`written_by` reads it back without Spark.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from deltalake import DeltaTable

_CURRENT: ContextVar[dict[str, str]] = ContextVar("musicrec_commit_metadata", default={})  # noqa: B039


@contextmanager
def recording(metadata: Mapping[str, str]) -> Iterator[None]:
    """Commits inside this block carry ``metadata`` (e.g. the MLflow run id and a config hash)."""
    token = _CURRENT.set(dict(metadata))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> dict[str, str]:
    """The metadata the next commit records (empty outside :func:`recording`)."""
    return dict(_CURRENT.get())


def commit_metadata(metadata: dict[str, str]) -> dict[str, str] | None:
    """``metadata`` as a commit's ``userMetadata`` (delta-rs ``custom_metadata`` / Spark's option).

    Not as top-level commit keys: Spark's Delta reader parses the commit info into a fixed
    struct, and a key such as ``job`` (a struct there) makes every Spark read of the table fail.
    """
    return {"userMetadata": json.dumps(metadata, sort_keys=True)} if metadata else None


def written_by(path: str, version: int) -> dict[str, str]:
    """The metadata recorded by the commit that made ``version`` of the table at ``path`` ({} if none)."""
    for entry in DeltaTable(path).history():
        if entry.get("version") == version:
            raw = entry.get("userMetadata")
            return json.loads(raw) if raw else {}
    raise ValueError(f"{path} has no version {version} in its history")
