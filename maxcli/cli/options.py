"""CLI flags generated from PipelineConfig's fields, so each flag's help text is written once (on the field).

`@pipeline_options` rewrites a Typer command's signature: one option per config field (sections
flattened: --kv-cache-page-size, --temperature, ...) plus --config-file/--section-name. Every generated
option defaults to None, so only flags the user typed override the YAML file (flag > file > default).
"""

from __future__ import annotations

import enum
import functools
import inspect
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from maxcli.config import PipelineConfig
from maxcli.config.pipeline_config import _SECTIONS

PANEL = "Pipeline options"


def iter_config_fields() -> Iterator[tuple[str, FieldInfo]]:
    """(flat name, field) for every PipelineConfig field a flag can set, section fields flattened."""
    for name, f in PipelineConfig.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("cli") is False:
            continue
        if name in _SECTIONS:
            section: type[BaseModel] = _SECTIONS[name]
            yield from section.model_fields.items()
        else:
            yield name, f


def _option_type(name: str, annotation: Any) -> tuple[Any, bool]:
    """(annotation for Typer, is_bool). Lists become repeatable options; Literals and devices are str."""
    if name == "device_specs":
        return Optional[str], False
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Union and len(args) == 1:
        annotation, origin, args = args[0], typing.get_origin(args[0]), list(typing.get_args(args[0]))
    if origin is list:
        inner = args[0] if args else str
        return Optional[list[inner if inner in (str, int, float, Path) else str]], False  # type: ignore[valid-type]
    if origin is typing.Literal:
        return Optional[str], False
    if annotation is bool:
        return Optional[bool], True
    if isinstance(annotation, type) and issubclass(annotation, (enum.Enum, int, float, str, Path)):
        return Optional[annotation], False
    return Optional[str], False


def _help(f: FieldInfo) -> str:
    text = f.description or ""
    default = f.get_default(call_default_factory=True)
    if default not in (None, [], "") and not isinstance(default, BaseModel):
        shown = default.value if isinstance(default, enum.Enum) else default
        if isinstance(shown, list):
            shown = ",".join(map(str, shown))
        text += f" [default: {shown}]"
    return text


def config_parameters() -> list[inspect.Parameter]:
    params = []
    for name, f in iter_config_fields():
        annotation, is_bool = _option_type(name, f.annotation)
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        flags = list(extra.get("flags", [f"--{name.replace('_', '-')}"]))
        if is_bool:
            flags = [f"{fl}/--no-{fl[2:]}" for fl in flags[:1]]
        metavar = None
        if typing.get_origin(annotation) is typing.Union:
            inner = [a for a in typing.get_args(annotation) if a is not type(None)][0]
            if typing.get_origin(inner) is list:
                metavar = {int: "INT", float: "FLOAT", Path: "PATH"}.get(typing.get_args(inner)[0], "TEXT")
        option = typer.Option(
            None, *flags, help=_help(f), show_default=False, rich_help_panel=PANEL, metavar=metavar
        )
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    params.append(
        inspect.Parameter(
            "config_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--config-file", help="YAML file with config values (flags override it).", rich_help_panel=PANEL),
            annotation=Optional[Path],
        )
    )
    params.append(
        inspect.Parameter(
            "section_name",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--section-name", help="Section of the YAML file to read.", rich_help_panel=PANEL),
            annotation=Optional[str],
        )
    )
    return params


_CONFIG_PARAM_NAMES = None


def _config_names() -> set[str]:
    global _CONFIG_PARAM_NAMES
    if _CONFIG_PARAM_NAMES is None:
        _CONFIG_PARAM_NAMES = {name for name, _ in iter_config_fields()}
    return _CONFIG_PARAM_NAMES


def config_from_kwargs(kwargs: dict[str, Any]) -> PipelineConfig:
    """Pop the generated options out of kwargs and build the PipelineConfig (flag > file > default)."""
    overrides: dict[str, Any] = {}
    for name in _config_names():
        value = kwargs.pop(name, None)
        if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
            continue
        overrides[name] = list(value) if isinstance(value, tuple) else value
    config_file = kwargs.pop("config_file", None)
    section_name = kwargs.pop("section_name", None)
    return PipelineConfig.from_sources(overrides, config_file, section_name)


def pipeline_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command every pipeline flag; the command receives `config: PipelineConfig`."""
    sig = inspect.signature(func)
    own = [p for p in sig.parameters.values() if p.name != "config"]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        config = config_from_kwargs(kwargs)
        return func(config=config, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + config_parameters())  # type: ignore[attr-defined]
    return wrapper
