"""Typed, validated configuration: schema, YAML loading, overrides."""

from musicrec.config.loader import ConfigError, load_config, to_yaml
from musicrec.config.schema import Config

__all__ = ["Config", "ConfigError", "load_config", "to_yaml"]
