"""Every run records the resolved config, the git commit and the Delta table versions it read."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

import mlflow

from musicrec.config import Config, to_yaml
from musicrec.lake.readers import table_exists, table_version
from musicrec.lake.tables import table_path


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


def table_versions(config: Config, tables: Iterable[str]) -> dict[str, int]:
    """Current version of each named table of the dataset (the lineage a run logs)."""
    out = {}
    for name in tables:
        path = table_path(config.lake.root, config.dataset.name, name)
        if table_exists(path):
            out[name] = table_version(path)
    return out


def log_lineage(config: Config, tables: Iterable[str]) -> dict[str, int]:
    """Log config (artifact + flat params), commit and table versions to the active run."""
    versions = table_versions(config, tables)
    mlflow.log_text(to_yaml(config), "config.yaml")
    mlflow.set_tags({"git_commit": git_commit(), "dataset": config.dataset.name, "seed": str(config.seed)})
    mlflow.log_params({f"table_version.{name}": v for name, v in versions.items()})
    return versions
