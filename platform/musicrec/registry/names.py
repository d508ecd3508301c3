"""Registered model names, the champion alias and the version tags, defined once."""

from __future__ import annotations

from musicrec.contract import Protocol

CHAMPION = "champion"
# Tags of a version's validation metrics: val/<metric>_at_<k> (its run logs them as val/<task>/...).
VALIDATION_PREFIX = "val/"
# The Delta versions a version was trained and validated on, one canonical string (compared by promote).
DATA_VERSIONS = "data_versions"


def registered_name(dataset: str, task: str, family: str) -> str:
    """``<dataset>.<task>.<family>``, e.g. ``synthetic-small.T1.als`` (spec: MLflow conventions)."""
    return f"{dataset}.{task}.{family}"


def evaluation_tables(protocol: str) -> tuple[str, ...]:
    """The lake tables a model of ``protocol`` learns and is validated from: the training sequences
    (and the GTS histories) and the protocol's examples."""
    return ("sequences", f"{Protocol.parse(protocol).kind}_examples")


def data_versions(versions: dict[str, int]) -> str:
    """``holdout_examples=2,sequences=5``: equal strings, the same data."""
    return ",".join(f"{name}={version}" for name, version in sorted(versions.items()))
