"""Every run records the resolved config, the git commit and the Delta table versions it read and wrote."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.delta_dataset_source import DeltaDatasetSource
from mlflow.data.meta_dataset import MetaDataset

from musicrec.config import Config, to_yaml
from musicrec.lake.readers import table_exists, table_version
from musicrec.lake.tables import table_path

# mlflow.log_input contexts of the lake tables a run read and wrote.
READ, WRITTEN = "input", "output"


class DeltaSource(DeltaDatasetSource):
    """A Delta table at one version. MLflow's own ``to_dict`` drops version 0 (it tests the version
    for truth), so a table's first version would read as "latest"; this records every version."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "delta_table_version": self._delta_table_version}


def git_commit() -> str:
    """The source commit (``+dirty`` when the work tree has changes), or ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty.strip() else "")


def config_hash(config: Config) -> str:
    """A short digest of the resolved config: equal hashes, equal configs."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_params(config: Config) -> dict[str, str]:
    """The resolved config as flat ``dotted.key`` params (searchable in MLflow)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix.rstrip(".")] = json.dumps(node) if isinstance(node, list | dict | None) else str(node)

    walk(config.model_dump(mode="json"), "")
    return out


def table_versions(config: Config, tables: Iterable[str]) -> dict[str, int]:
    """Current version of each named table of the dataset (the lineage a run logs)."""
    out = {}
    for name in tables:
        path = table_path(config.lake.root, config.dataset.name, name)
        if table_exists(path):
            out[name] = table_version(path)
    return out


def log_config(config: Config, verb: str) -> None:
    """The resolved config (artifact and flat params) and where the code came from, on the active run."""
    mlflow.log_params(config_params(config))
    _log_origin(config, verb)


def _log_origin(config: Config, verb: str) -> None:
    mlflow.log_text(to_yaml(config), "config.yaml")
    mlflow.set_tags(
        {
            "verb": verb,
            "git_commit": git_commit(),
            "config_hash": config_hash(config),
            "dataset": config.dataset.name,
            "seed": str(config.seed),
        }
    )


def log_lineage(config: Config, tables: Iterable[str], verb: str = "train") -> dict[str, int]:
    """The lineage of a run that a verb opens inside its own (a training run): the config artifact, commit and
    config hash, and the Delta tables read, so the model's run leads back to its data on its own."""
    versions = table_versions(config, tables)
    _log_origin(config, verb)
    log_tables(config, versions, READ)
    return versions


def log_tables(config: Config, versions: dict[str, int], context: str) -> None:
    """Each table version as an MLflow dataset with a Delta source (path and version), in ``context``."""
    for name, version in versions.items():
        path = table_path(config.lake.root, config.dataset.name, name)
        source = DeltaSource(path=path if "://" in path else str(Path(path).resolve()), delta_table_version=version)
        mlflow.log_input(MetaDataset(source, name=f"{config.dataset.name}.{name}"), context=context)
    if context == READ:
        mlflow.log_params({f"table_version.{name}": v for name, v in versions.items()})
