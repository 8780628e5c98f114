"""A repo's config and tokenizer as transformers objects (config.json, or GGUF metadata turned into it).

Configs built from GGUF metadata are snapshotted: the config transformers builds for those values is
frozen to its plain attribute values and kept on disk, keyed by the values and the transformers
version. Later loads read the snapshot and import no transformers code: importing a model's config
class pulls in most of transformers and torch.distributed (~2 s of a ~3 s cold start).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maxcli.pipelines.lib.hf_repo import HuggingFaceRepo

_SNAPSHOT_FORMAT = 2  # bump when ConfigSnapshot's file layout or meaning changes


class _PretrainedConfigMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        # An object can only be a transformers config once transformers' config module is loaded.
        module = sys.modules.get("transformers.configuration_utils")
        return module is not None and isinstance(obj, module.PreTrainedConfig)


class PretrainedConfig(metaclass=_PretrainedConfigMeta):
    """Stands for `transformers.PretrainedConfig` in annotations and isinstance checks without
    importing transformers. It is never instantiated; a ConfigSnapshot is not an instance."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("maxcli.pipelines.lib.hf_config.PretrainedConfig is a stand-in; build transformers' class")


class ConfigSnapshot:
    """A transformers config frozen to plain values: every public, non-callable attribute of the
    config transformers built (same names, same values), `to_dict()` as transformers gave it, and
    `dict(snapshot) == snapshot.to_dict()`. Only text configs are snapshotted, so `get_text_config()`
    is the snapshot itself, as it is for the config it stands for."""

    def __init__(self, attributes: dict[str, Any], as_dict: dict[str, Any], class_name: str) -> None:
        object.__setattr__(self, "_attributes", attributes)
        object.__setattr__(self, "_dict", as_dict)
        object.__setattr__(self, "class_name", class_name)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._attributes[name]
        except KeyError:
            raise AttributeError(f"{self.class_name} snapshot has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._attributes[name] = value

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._dict)  # a fresh copy, as transformers returns

    def keys(self) -> list[str]:
        return list(self._dict)

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def get_text_config(self, *args: Any, **kwargs: Any) -> "ConfigSnapshot":
        return self

    def __repr__(self) -> str:
        return f"ConfigSnapshot({self.class_name}, {json.dumps(self._dict, sort_keys=True)})"


class _Unencodable(Exception):
    pass


def _encode(value: Any) -> Any:
    """A JSON form that decodes to an equal value of the same types: tuples, sets, torch dtypes and
    dicts with non-string keys are tagged; anything else that JSON cannot hold raises _Unencodable."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if type(value).__name__ == "dtype" and type(value).__module__ == "torch":
        return {"__torch_dtype__": str(value).removeprefix("torch.")}
    if type(value) in (list, tuple, set, frozenset):
        items = [_encode(v) for v in value]
        return items if type(value) is list else {f"__{type(value).__name__}__": items}
    if type(value) is dict:
        if all(type(k) is str and not k.startswith("__") for k in value):
            return {k: _encode(v) for k, v in value.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise _Unencodable(type(value).__name__)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag == "__torch_dtype__":
            import torch

            return getattr(torch, inner)
        kinds = {"__tuple__": tuple, "__set__": set, "__frozenset__": frozenset}
        if tag in kinds:
            return kinds[tag](_decode(v) for v in inner)
        if tag == "__items__":
            return {_decode(k): _decode(v) for k, v in inner}
    return {k: _decode(v) for k, v in value.items()}


def snapshot_of(config: Any) -> dict[str, Any] | None:
    """The snapshot file contents for a transformers config, None when it cannot stand for it."""
    if config.get_text_config() is not config:
        return None
    attributes: dict[str, Any] = {}
    for name in dir(config):
        if name.startswith("_"):
            continue
        try:
            value = getattr(config, name)
        except Exception:  # deprecated / invalid-for-this-model properties raise
            continue
        if callable(value):
            continue
        try:
            attributes[name] = _encode(value)
        except _Unencodable:  # live helper objects (e.g. per-layer views): not configuration values
            continue
    try:
        as_dict = _encode(config.to_dict())
    except _Unencodable:
        return None
    return {"format": _SNAPSHOT_FORMAT, "class": type(config).__name__, "attributes": attributes, "dict": as_dict}


def _snapshot_from_file(data: dict[str, Any]) -> ConfigSnapshot:
    attributes = {k: _decode(v) for k, v in data["attributes"].items()}
    return ConfigSnapshot(attributes, _decode(data["dict"]), data["class"])


def config_cache_dir() -> Path:
    return Path(os.environ.get("MAXCLI_CACHE", Path.home() / ".cache" / "maxcli")) / "configs"


def _transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def build_transformers_config(values: dict[str, Any]) -> Any:
    """transformers' config for config.json values; a model_type transformers lacks gives a plain one."""
    from transformers import AutoConfig
    from transformers import PretrainedConfig as Base

    values = dict(values)
    model_type = values.pop("model_type", None)
    if model_type:
        try:
            return AutoConfig.for_model(model_type, **values)
        except ValueError:
            pass
    cfg = Base(**values)
    if model_type:
        cfg.model_type = model_type
    return cfg


def snapshotted_config(values: dict[str, Any]) -> Any:
    """The config for maxcli-derived values (GGUF metadata): a ConfigSnapshot from the cache when one
    exists for these values and this transformers version, else transformers' config (snapshotted for
    next time). Cost on a hit: one small JSON read."""
    key_text = json.dumps({"values": values, "transformers": _transformers_version(), "format": _SNAPSHOT_FORMAT}, sort_keys=True)
    path = config_cache_dir() / f"{hashlib.sha1(key_text.encode()).hexdigest()[:20]}.json"
    try:
        return _snapshot_from_file(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # no snapshot yet, or a damaged one: rebuild
        pass
    config = build_transformers_config(values)
    data = snapshot_of(config)
    if data is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)
        except OSError:  # a read-only home: the snapshot is an optimisation, never a requirement
            pass
    return config


def load_pretrained_config(repo: "HuggingFaceRepo") -> Any:
    """The repo's config: transformers' config class for config.json, a snapshot of it for GGUF metadata."""
    from maxcli.pipelines.lib.hf_repo import config_json_values, gguf_config_values

    values = config_json_values(repo)
    if values is not None:
        return build_transformers_config(values)
    return snapshotted_config(gguf_config_values(repo))


def gguf_location(repo: "HuggingFaceRepo") -> tuple[str, str | None]:
    """(folder or repo id, gguf file name or None) for loading a tokenizer."""
    p = Path(repo.repo_id)
    if p.suffix == ".gguf" and p.is_file():
        return str(p.parent), p.name
    return repo.repo_id, None


def load_hf_tokenizer(repo: "HuggingFaceRepo") -> Any:
    from transformers import AutoTokenizer

    where, gguf_file = gguf_location(repo)
    kwargs: dict[str, Any] = {"trust_remote_code": repo.trust_remote_code, "revision": repo.revision}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    return AutoTokenizer.from_pretrained(where, **kwargs)
