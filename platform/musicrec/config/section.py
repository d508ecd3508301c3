"""The base of every config section: unknown keys, loose types and mutation are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Strict: a YAML string "3" is not an int, so a typo never silently becomes a default.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
