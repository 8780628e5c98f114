"""Loading user architectures: `--custom-architectures PATH` imports PATH and registers its ARCHITECTURES."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from maxcli.pipelines.lib.registry import PIPELINE_REGISTRY, PipelineRegistry
from maxcli.pipelines.lib.supported_architecture import SupportedArchitecture


class CustomArchitectureError(ValueError):
    """A custom-architecture folder or module that cannot be used; the message names it and the cause."""


def _import_folder(path: Path) -> ModuleType:
    init = path / "__init__.py"
    if not init.is_file():
        raise CustomArchitectureError(f"custom architectures {path}: no __init__.py in the folder")
    # A unique module name per folder, so two folders both called my_model do not collide; relative
    # imports inside the folder (from .arch import ...) resolve through submodule_search_locations.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"maxcli_custom_{path.name.replace('-', '_')}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(path)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def import_custom_architectures(spec: str) -> list[SupportedArchitecture]:
    """The ARCHITECTURES list of a folder (imported as a package) or of a dotted module path."""
    path = Path(spec).expanduser()
    try:
        if path.exists():
            if not path.is_dir():
                raise CustomArchitectureError(f"custom architectures {spec}: not a folder")
            module = _import_folder(path)
        else:
            if "/" in spec or spec.startswith("."):
                raise CustomArchitectureError(f"custom architectures {spec}: no such folder")
            module = importlib.import_module(spec)
    except CustomArchitectureError:
        raise
    except Exception as e:  # the user's code failed to import: name the folder and the cause in one line
        cause = f"{type(e).__name__}: {e}".splitlines()[0]
        raise CustomArchitectureError(f"custom architectures {spec}: import failed: {cause}") from None
    archs = getattr(module, "ARCHITECTURES", None)
    if archs is None:
        raise CustomArchitectureError(f"custom architectures {spec}: no ARCHITECTURES list in its __init__.py")
    if not isinstance(archs, (list, tuple)) or not all(isinstance(a, SupportedArchitecture) for a in archs):
        raise CustomArchitectureError(
            f"custom architectures {spec}: ARCHITECTURES must be a list of SupportedArchitecture"
        )
    return list(archs)


def register_custom_architectures(specs: list[str], registry: PipelineRegistry = PIPELINE_REGISTRY) -> list[str]:
    """Register every entry of each spec over any built-in of the same name; returns the names."""
    names: list[str] = []
    for spec in specs:
        for arch in import_custom_architectures(spec):
            registry.register(arch, allow_override=True)
            names.append(arch.name)
    return names


def prepare_config(config: Any) -> Any:
    """What every entry point does first (and every tensor-parallel worker again, in its fresh process):
    register the config's --custom-architectures and fill in the default model when none is named."""
    from maxcli.pipelines.lib.factory import with_model_path

    register_custom_architectures(config.custom_architectures, PIPELINE_REGISTRY)
    return with_model_path(config)
