"""``musicrec promote``: move the ``champion`` alias of ``<dataset>.<task>.<family>`` to its best version.

Best is the highest validation metric (``promote.metric``, tagged ``val/<metric>`` on each version;
every platform metric is higher-is-better), ties kept by the current champion, then the oldest
version. Validation values are comparable only on the same data: a version whose Delta versions
(``data_versions``) differ from the champion's is refused unless ``promote.force``.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion

from musicrec.config import Config
from musicrec.errors import ConfigError, InputError
from musicrec.registry.names import CHAMPION, DATA_VERSIONS, VALIDATION_PREFIX, registered_name

log = logging.getLogger(__name__)


def check_promote(config: Config) -> None:
    missing = [key for key in ("task", "family") if not getattr(config.promote, key)]
    if missing:
        raise ConfigError(
            f"promote needs {' and '.join(f'promote.{key}' for key in missing)} "
            "(e.g. promote.task=T1 promote.family=als)"
        )


def choose(
    versions: list[ModelVersion], metric: str, champion: int | None, wanted: int | None
) -> ModelVersion:
    """The version to promote: ``wanted``, or the best by the validation ``metric``."""
    if wanted is not None:
        found = [v for v in versions if int(v.version) == wanted]
        if not found:
            there = ", ".join(str(v.version) for v in versions)
            raise InputError(f"promote.version={wanted}: no such version (there are {there})")
        return found[0]
    key = VALIDATION_PREFIX + metric
    scored = [v for v in versions if key in v.tags]
    if not scored:
        tagged = sorted({t for v in versions for t in v.tags if t.startswith(VALIDATION_PREFIX)})
        raise InputError(
            f"promote.metric={metric}: no version is tagged {key} (tagged: {', '.join(tagged) or 'none'})"
        )
    return max(scored, key=lambda v: (float(v.tags[key]), int(v.version) == champion, -int(v.version)))


def promote(name: str, metric: str, *, version: int | None = None, force: bool = False) -> dict[str, Any]:
    client = mlflow.MlflowClient()
    versions = list(client.search_model_versions(f"name='{name}'"))
    if not versions:
        raise InputError(
            f"no registered model {name}: run `musicrec register` (or train with train.register=true) first"
        )
    # Versions are numbers; some stores give them as strings.
    current = client.get_registered_model(name).aliases.get(CHAMPION)
    current = None if current is None else int(current)
    chosen = choose(versions, metric, current, version)
    champion = next((v for v in versions if int(v.version) == current), None)
    if champion is not None and chosen is not champion:
        theirs, ours = champion.tags.get(DATA_VERSIONS), chosen.tags.get(DATA_VERSIONS)
        if theirs != ours and not force:
            raise InputError(
                f"{name} version {chosen.version} was evaluated on data {ours} but the champion (version "
                f"{champion.version}) on {theirs}: not comparable; promote.force=true promotes it anyway"
            )
    client.set_registered_model_alias(name, CHAMPION, chosen.version)
    value = chosen.tags.get(VALIDATION_PREFIX + metric)
    log.info("%s@%s is version %s (%s %s)", name, CHAMPION, chosen.version, metric, value)
    return {
        "name": name,
        "champion": int(chosen.version),
        "previous": current,
        "metric": metric,
        "value": float(value) if value is not None else None,
        DATA_VERSIONS: chosen.tags.get(DATA_VERSIONS),
    }


def run_promote(config: Config) -> dict[str, Any]:
    p = config.promote
    name = registered_name(config.dataset.name, p.task, p.family)
    summary = promote(name, p.metric, version=p.version, force=p.force)
    mlflow.log_params(
        {"registered_model": name, "champion": summary["champion"], "previous": summary["previous"]}
    )
    return summary
