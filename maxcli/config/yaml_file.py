"""YAML config files: one mapping of config keys, or named sections of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config problem the user must fix; its message is one line naming the key and the source."""


def load_yaml_section(path: str | Path, section_name: str | None = None) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p}: invalid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
    if section_name is not None:
        if section_name not in data:
            raise ConfigError(f"{p}: no section '{section_name}' (sections: {', '.join(map(str, data)) or 'none'})")
        data = data[section_name]
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: section '{section_name}' must be a mapping")
    return data
