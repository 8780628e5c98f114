"""Where architecture packages come from: the folders under maxcli/architectures/ (maxcli's own), then
every package installed under the `maxcli.architectures` entry-point group (plugins). Each exports
ARCHITECTURES (registry entries) and may export GGUF_ARCHITECTURES (how its family's GGUF files read).

Adding a built-in architecture is adding its folder; nothing else names it. Cost: one directory listing,
one entry-point scan and the packages' imports, once per process (cached).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

ENTRY_POINT_GROUP = "maxcli.architectures"


@functools.cache
def architecture_packages() -> tuple[ModuleType, ...]:
    """Built-in architecture packages in folder-name order, then plugins in entry-point-name order."""
    root = Path(__file__).resolve().parent / "architectures"
    names = sorted(m.name for m in pkgutil.iter_modules([str(root)]) if m.ispkg)
    packages = [importlib.import_module(f"maxcli.architectures.{name}") for name in names]
    packages += [ep.load() for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)]
    return tuple(p for p in packages if hasattr(p, "ARCHITECTURES") or hasattr(p, "GGUF_ARCHITECTURES"))
