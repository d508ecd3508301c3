"""Who wrote a table version: every Delta commit carries the MLflow run and config that made it.

The verb runner opens :func:`recording` around a verb; every commit staged inside it records the
metadata (``lake.delta.stage``): Spark's Delta writer as the JSON ``userMetadata``, delta-rs as
commit keys. :func:`written_by` reads either back without Spark.
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


def written_by(path: str, version: int) -> dict[str, str]:
    """The metadata recorded by the commit that made ``version`` of the table at ``path`` ({} if none).

    Spark's Delta writer keeps it as the JSON ``userMetadata``; delta-rs as top-level commit keys.
    """
    for entry in DeltaTable(path).history():
        if entry.get("version") == version:
            raw = entry.get("userMetadata")
            if raw:
                return json.loads(raw)
            return {k: v for k, v in entry.items() if isinstance(v, str) and k not in _DELTA_KEYS}
    raise ValueError(f"{path} has no version {version} in its history")


_DELTA_KEYS = {"operation", "engineInfo", "clientVersion", "isolationLevel", "userId", "userName"}
