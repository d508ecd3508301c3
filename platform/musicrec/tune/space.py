"""The search space of ``tune.space``: Tune's distributions, and a trial's config from its values."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from musicrec.config import Config
from musicrec.config.schema import Dimension
from musicrec.errors import ConfigError


def distribution(dimension: Dimension):
    from ray import tune

    if dimension.type == "choice":
        return tune.choice(list(dimension.values or ()))
    low, high = dimension.low, dimension.high
    if dimension.type == "int":
        return tune.randint(int(low), int(high) + 1)  # randint excludes its upper bound
    if dimension.type == "loguniform":
        return tune.loguniform(low, high)
    return tune.uniform(low, high)


def search_space(space: dict[str, Dimension]) -> dict[str, Any]:
    return {key: distribution(dimension) for key, dimension in space.items()}


def _plain(value: Any) -> Any:
    # Samplers hand back numpy scalars; the strict config takes Python ones.
    return value.item() if hasattr(value, "item") else value


def trial_config(base: dict, params: dict[str, Any]) -> Config:
    """``base`` (a config dumped as JSON) with the dotted keys of ``params`` set, validated."""
    data = {section: dict(value) if isinstance(value, dict) else value for section, value in base.items()}
    for key, value in params.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[leaf] = _plain(value)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"tune.space gives an invalid config ({', '.join(f'{k}={v}' for k, v in params.items())}): {problems}") from None


def corners(dimension: Dimension) -> list[Any]:
    if dimension.type == "choice":
        return list(dimension.values or ())
    if dimension.type == "int":
        return [int(dimension.low), int(dimension.high)]
    return [dimension.low, dimension.high]


def check_space(config: Config) -> None:
    """Every bound and choice of every dimension makes a valid config (so no trial fails on it)."""
    if not config.tune.space:
        raise ConfigError("tune needs a search space: tune.space (presets in conf/tune/*.yaml)")
    base = config.model_dump(mode="json")
    for key, dimension in config.tune.space.items():
        section, *rest = key.split(".")
        if rest and rest[0] not in type(getattr(config, section)).model_fields:
            raise ConfigError(f"tune.space: {key} is not a key of the {section} section (model.family={config.model.family})")
        for value in corners(dimension):
            trial_config(base, {key: value})
