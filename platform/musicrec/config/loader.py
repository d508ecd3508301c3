"""Load YAML files and ``key=value`` overrides into a validated :class:`Config`.

Files are merged left to right (a file may ``include:`` others, relative to itself, merged
before it), then overrides. Every leaf remembers which file or override set it, so a
validation error names both the dotted key and where its value came from.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from musicrec.config.schema import Config
from musicrec.errors import ConfigError

# A profile marks a value the user must supply (e.g. the cluster's lake root) with this.
MISSING = "???"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2's floats: ``1e-3`` is a number (YAML 1.1 wants ``1.0e-3``
    and would hand a learning rate written the way everyone writes it to validation as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _merge(base: dict, top: dict, sources: dict[str, str], source: str, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict) and value:
            out[key] = _merge(out[key], value, sources, source, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
            _record(sources, dotted, value, source)
    return out


def _record(sources: dict[str, str], dotted: str, value: Any, source: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _record(sources, f"{dotted}.{k}", v, source)
    sources[dotted] = source


def _read_yaml(path: Path, sources: dict[str, str], seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: include cycle through {' -> '.join(str(p) for p in seen)}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, found {type(data).__name__}")
    includes = data.pop("include", []) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict = {}
    for inc in includes:
        merged = _merge(merged, _read_yaml(path.parent / inc, sources, (*seen, path)), {}, "")
    return _merge(merged, data, sources, str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value``: the value is parsed as YAML, so ``k=3`` is an int and ``ks=[1,3]`` a list."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form dotted.key=value")
    try:
        value = _yaml(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {e}") from e
    return key, value


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(
    files: Sequence[str | Path] = (),
    overrides: Iterable[str] = (),
    flags: Iterable[tuple[str, Any, str]] = (),
) -> Config:
    """Merge ``files``, then ``overrides``, then ``flags`` onto the defaults and validate before any work.

    ``flags`` are typed values a verb's command-line flags set: ``(dotted key, value, flag)``,
    e.g. ``("data.root", "out", "--out")``; errors name the flag as the value's source.
    """
    sources: dict[str, str] = {}
    data: dict = {}
    for f in files:
        # _read_yaml records each key's source itself (included files under their own names).
        data = _merge(data, _read_yaml(Path(f), sources), {}, "")
    for text in overrides:
        key, value = parse_override(text)
        data = _merge(data, _nest(key, value), sources, f"override {text!r}")
    for key, value, flag in flags:
        data = _merge(data, _nest(key, value), sources, f"flag {flag}")
    unset = [key for key, value in _leaves(data) if value == MISSING]
    if unset:
        raise ConfigError(
            _problems([f"{key}: must be set (left as {MISSING} by {_source_of(key, sources)})" for key in unset])
        )
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, sources, data)) from None


def _problems(lines: list[str]) -> str:
    """One problem fits on one line; several are listed one per line."""
    if len(lines) == 1:
        return f"invalid config: {lines[0]}"
    return f"invalid config ({len(lines)} problems):" + "".join(f"\n  {line}" for line in lines)


def _user_loc(loc: tuple, data: dict) -> list[str]:
    """The key path as the user wrote it: a discriminated union (``model``) puts the chosen tag
    (``als``) into the error location, which is not a key of the file."""
    out, node = [], data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("family") == part:
            continue
        out.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return out


def _describe(error: ValidationError, sources: dict[str, str], data: dict) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(_user_loc(err["loc"], data))
        if err["type"] == "extra_forbidden":
            what = "unknown key"
        elif err["type"] == "missing":
            what = "missing required value"
        elif isinstance(err.get("input"), dict):
            # A cross-field check of a whole section: its input is the section, too long to echo.
            what = err["msg"].removeprefix("Value error, ")
        else:
            what = f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"
        found = _sources_for(key, what, sources)
        lines.append(f"{key}: {what}" + (f" [from {', '.join(found)}]" if found else ""))
    return _problems(lines)


def _sources_for(key: str, message: str, sources: dict[str, str]) -> list[str]:
    """Where the value at ``key`` came from. A section-level (cross-field) error names the sources
    of the fields its message mentions, e.g. the overrides that set min_len and max_len, rather
    than the file that set the section as a whole."""
    named = [
        source
        for dotted, source in sources.items()
        if dotted.startswith(f"{key}.") and re.search(rf"\b{re.escape(dotted.rpartition('.')[2])}\b", message)
    ]
    found = named or [_source_of(key, sources)]
    return [s for s in dict.fromkeys(found) if s]


def _leaves(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out.extend(_leaves(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _source_of(key: str, sources: dict[str, str]) -> str:
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    return ""


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
